"""Dataclass configs: a YAML file sets them, `key.sub=value` arguments override them.

Every stage (training, curation, annotation) uses these helpers so that configs behave the same
everywhere: unknown keys and wrong types are errors naming the key, and the resolved config is
saved beside every output.
"""
import copy
import dataclasses
import difflib
import glob
import os
import types
import typing

import yaml

from megasnow.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key that does not exist or a value of the wrong type; names the full key."""


def load_config(cls, yaml_path=None, overrides=()):
    """Build `cls` from defaults, then the YAML file (if any), then `key.sub=value` overrides.

    Raises ConfigError naming the key; one that the YAML file alone causes also names the file first
    ("c.yaml: sampling.top_p must be ..."), one that an override causes keeps its plain text."""
    data = {}
    if yaml_path is not None:
        with open(yaml_path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{yaml_path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping of config sections")
    merged = apply_overrides(data, overrides)
    try:
        return from_dict(cls, merged)
    except ConfigError as e:
        if yaml_path is not None and (not overrides or _error_text(cls, data) == str(e)):
            raise ConfigError(f"{yaml_path}: {e}") from None
        raise  # caused by an override (which may also complete or replace what the file sets): named as typed


def _error_text(cls, data):
    """The ConfigError text `from_dict(cls, data)` raises, or None."""
    try:
        from_dict(cls, data)
    except ConfigError as e:
        return str(e)
    return None


def path_from_yaml_folder(path, yaml_folder, suffix=""):
    """`path` joined to `yaml_folder` (the folder of the YAML file that set it) when it is relative and exists there
    (`path + suffix` exists: a dataset prefix's ".idx"; a glob: matches there), else unchanged, so relative to the
    working directory. Every stage resolves YAML paths this way, so a shipped config works from any folder."""
    if not path or os.path.isabs(path):
        return path
    joined = os.path.join(yaml_folder, path)
    if os.path.exists(joined + suffix) or (glob.has_magic(path) and glob.glob(joined + suffix)):
        return joined
    return path


def apply_overrides(data, overrides):
    """Return a copy of the nested dict `data` with `a.b.c=value` strings applied (values parsed as YAML).

    A numeric part indexes a list that the YAML already holds: `phases.1.schedule.max_lr=1e-3`.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:  # not YAML (e.g. "@file"): the text itself
            value = raw
        parts = key.split(".")
        node, where = data, ""
        for p, nxt_part in zip(parts[:-1], parts[1:]):
            if isinstance(node, list):
                i = _list_index(node, p, key, where)
                nxt = node[i]
                where = f"{where}[{i}]"
            else:
                nxt = node.get(p)
                where = f"{where}.{p}" if where else p
                if nxt is None:
                    if nxt_part.isdigit():  # an index into a list the config does not have
                        raise ConfigError(f"override {key!r}: {where} has no entries to index "
                                          f"(set the list in the YAML file first)")
                    nxt = node[p] = {}
            if not isinstance(nxt, (dict, list)):
                raise ConfigError(f"override {key!r}: {where!r} is not a section or a list")
            node = nxt
        if isinstance(node, list):
            node[_list_index(node, parts[-1], key, where)] = value
        else:
            node[parts[-1]] = value
    return data


def _list_index(items, part, key, where):
    if not part.isdigit():
        raise ConfigError(f"override {key!r}: {where} is a list; index it with a number "
                          f"(e.g. {where}.0...), not {part!r}")
    i = int(part)
    if i >= len(items):
        valid = f"valid: 0..{len(items) - 1}" if items else "it is empty"
        raise ConfigError(f"override {key!r}: index {i} is out of range, {where} has {len(items)} entries ({valid})")
    return i


def from_dict(cls, data, prefix=""):
    """Instantiate dataclass `cls` from a nested dict, checking keys and value types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], names, prefix))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            key = f"{prefix}.{f.name}" if prefix else f.name
            value = data[f.name]
            parse = (f.metadata or {}).get("parse")  # a field's own reader of what people write (e.g. "12.5B")
            if parse is not None and isinstance(value, str):
                try:
                    value = parse(value)
                except ValueError as e:
                    raise ConfigError(f"{key}: {e}") from None
            kwargs[f.name] = _convert(hints[f.name], value, key)
    try:
        return cls(**kwargs)
    except ConfigError:  # a check that names its own key
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def unknown_key_message(key, valid, prefix=""):
    """`unknown config key train.micro_batch_szie; did you mean train.micro_batch_size? ...` (difflib's closest
    valid key, when one is close enough), then every valid key of the section."""
    where = f"{prefix}." if prefix else ""
    text = f"unknown config key {where}{key}"
    close = difflib.get_close_matches(str(key), sorted(valid), n=1)
    if close:
        text += f"; did you mean {where}{close[0]}?"
    return text + f" (valid keys under {prefix or 'the top level'}: {', '.join(sorted(valid))})"


def _convert(tp, value, key):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else typing.Any
        items = [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else typing.Any
        return {k: _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is typing.Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def to_dict(cfg):
    return dataclasses.asdict(cfg)


def dump_config(cfg):
    """The resolved config as YAML text (what is saved beside checkpoints and outputs)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg, path):
    from megasnow.utils.atomic import atomic_write_text

    atomic_write_text(path, dump_config(cfg))


def describe_config(cls, prefix="", defaults=None):
    """One line per key: `section.key (type) = default`, for `--help`.

    A nested section's defaults are those of the value its field defaults to (a `default_factory` may build the
    section with other values than the section class's own: the recipe's ablation schedule is linear, warmup 10);
    `defaults`: that instance of `cls` (None: the class's own defaults)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "<required>"
        if dataclasses.is_dataclass(tp):
            lines += describe_config(tp, key, default if dataclasses.is_dataclass(default) else None)
            continue
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        line = f"  {key} ({tname}) = {default!r}"
        doc = (f.metadata or {}).get("help")
        if doc:
            line += f"    # {doc}"
        lines.append(line)
    return lines

