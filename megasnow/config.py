"""Dataclass configs: a YAML file sets them, `key.sub=value` arguments override them.

Every stage (training, curation, annotation) uses these helpers so that configs behave the same
everywhere: unknown keys and wrong types are errors naming the key, and the resolved config is
saved beside every output.
"""
import dataclasses
import types
import typing

import yaml


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type; names the full key."""


def load_config(cls, yaml_path=None, overrides=()):
    """Build `cls` from defaults, then the YAML file (if any), then `key.sub=value` overrides."""
    data = {}
    if yaml_path is not None:
        with open(yaml_path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{yaml_path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping of config sections")
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def apply_overrides(data, overrides):
    """Return a copy of the nested dict `data` with `a.b.c=value` strings applied (values parsed as YAML)."""
    data = _deepcopy_dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else nxt
                if not isinstance(nxt, dict):
                    raise ConfigError(f"override {key!r}: {p!r} is not a section")
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return data


def from_dict(cls, data, prefix=""):
    """Instantiate dataclass `cls` from a nested dict, checking keys and value types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!r}; valid keys under {prefix or 'the top level'}: "
            + ", ".join(sorted(names))
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            key = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


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


def describe_config(cls, prefix=""):
    """One line per key: `section.key (type) = default`, for `--help`."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe_config(tp, key)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "<required>"
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        line = f"  {key} ({tname}) = {default!r}"
        doc = (f.metadata or {}).get("help")
        if doc:
            line += f"    # {doc}"
        lines.append(line)
    return lines


def _deepcopy_dict(d):
    return {k: _deepcopy_dict(v) if isinstance(v, dict) else v for k, v in d.items()}
