"""What a resumed run may change in its config: every changed key is named at resume, changes that would break exact
resume are refused (unless checkpoint.allow_config_change), and a run with nothing left to do is recognised early."""
import dataclasses
import os

import yaml

from megasnow.config import ConfigError, from_dict

# Keys whose change breaks exact resume: they fix which sample comes next (data order, split, batch), what the
# saved tensors mean (tokenizer, model, dtype, parallel layout of the optimizer state), or what produced the weights.
FIXED_KEYS = {"data.seq_len", "data.seed", "data.valid_fraction", "data.tokenizer", "data.eod_id",
              "data.fim.rate", "data.fim.spm_rate", "data.fim.level",
              "train.global_batch_size", "train.seed", "train.dtype",
              "parallel.tensor", "parallel.pipeline", "parallel.virtual_pipeline", "parallel.pipeline_layers",
              "parallel.use_distributed_optimizer"}
# Model keys that change only how the same math runs.
RUNTIME_MODEL_KEYS = {"model.kernels", "model.activation_checkpointing"}
# Keys of a phase that may change after it started (its LR schedule, its held-out data); its length is checked apart.
MUTABLE_PHASE_FIELDS = {"schedule", "valid_blend"}
LENGTH_FIELDS = {"steps", "tokens"}
# Where the run lives is no config change: a checkpoint folder copied or moved elsewhere resumes without a word.
NOT_REPORTED = {"checkpoint.allow_config_change", "checkpoint.dir", "log.dir"}
ABSENT = "<absent>"


@dataclasses.dataclass
class ConfigChanges:
    """The keys that differ between a checkpoint's config and this run's, sorted by what resume makes of them."""
    refused: list  # (key, old, new): they break exact resume
    allowed: list  # (key, old, new)
    current_phase_length: bool  # steps/tokens of the phase being resumed changed (its data order is checked later)

    def describe(self, items):
        return ", ".join(f"{k} {_show(o)} -> {_show(n)}" for k, o, n in items)


def saved_config(step_dir):
    """The TrainConfig a checkpoint was written with, or None when its config.yaml cannot be read as one (another
    megasnow version); raises nothing."""
    from megasnow.train.config import TrainConfig

    try:
        with open(os.path.join(step_dir, "config.yaml"), encoding="utf-8") as f:
            return from_dict(TrainConfig, yaml.safe_load(f) or {})
    except (OSError, yaml.YAMLError, ConfigError):
        return None


def compare_configs(old, new, phase_index):
    """Classify every changed key of `new` against `old` (TrainConfigs) for a run resumed in phase `phase_index`."""
    old_dict, new_dict = dataclasses.asdict(old), dataclasses.asdict(new)
    for a, b, a_cfg in ((old_dict, new_dict, old), (new_dict, old_dict, new)):
        # a phase that gains or loses its own schedule: compare with the top-level one it had or will have
        for pa, pb in zip(a["phases"], b["phases"]):
            if pa["schedule"] is None and pb["schedule"] is not None:
                pa["schedule"] = dataclasses.asdict(a_cfg.schedule)
    before, after = flatten(old_dict), flatten(new_dict)
    distributed_optimizer = old.parallel.use_distributed_optimizer or new.parallel.use_distributed_optimizer
    refused, allowed, length = [], [], False
    for key in sorted(set(before) | set(after)):
        o, n = before.get(key, ABSENT), after.get(key, ABSENT)
        if key in NOT_REPORTED or _same(key, o, n):
            continue
        verdict = _classify(key, phase_index, bool(new.phases), distributed_optimizer)
        if verdict == "length":
            length = True
            verdict = "allowed"
        (refused if verdict == "refused" else allowed).append((key, o, n))
    return ConfigChanges(refused, allowed, length)


# A resume cannot change these even with checkpoint.allow_config_change: the optimizer state is saved per shard.
LAYOUT_KEYS = ("parallel.tensor", "parallel.pipeline", "parallel.virtual_pipeline", "parallel.pipeline_layers")


def check_resume_config(old, new, step_dir, phase_index, allow_change):
    """Raise ConfigError naming the keys that break exact resume (unless `allow_change`; a changed parallel layout
    is refused even then, with the checkpoint.init_from route); return the ConfigChanges and the warning line for
    the others ("" when nothing changed)."""
    changes = compare_configs(old, new, phase_index)
    layout = [item for item in changes.refused if item[0] in LAYOUT_KEYS]
    if layout:
        raise ConfigError(f"{step_dir} was trained with another parallel layout: {changes.describe(layout)}; a "
                          f"resume needs the same layout (the optimizer state is saved per shard): restore the "
                          f"checkpoint's values, or start a new run (another checkpoint.dir) with "
                          f"checkpoint.init_from={step_dir} (weights only; the optimizer state and the data "
                          f"position restart)")
    if changes.refused and not allow_change:
        raise ConfigError(f"{step_dir} was trained with another config: {changes.describe(changes.refused)} would "
                          f"break exact resume (the data order, the batch or the saved tensors change); restore "
                          f"the checkpoint's values, start a new run in another checkpoint.dir, or set "
                          f"checkpoint.allow_config_change=true to resume anyway")
    parts = []
    if changes.allowed:
        parts.append(f"resuming with config changes: {changes.describe(changes.allowed)}")
    if changes.refused:
        parts.append(f"resuming with changes that break exact resume (checkpoint.allow_config_change=true): "
                     f"{changes.describe(changes.refused)}")
    return changes, "; ".join(parts)


def run_finished(meta_trainer, cfg, changes):
    """Whether a checkpoint already holds the end of this config's run: every phase finished and no phase length
    changed (a longer last phase or a new phase means more to train)."""
    from megasnow.train.config import resolve_phases

    if changes is not None and (changes.current_phase_length or _phase_count_changed(changes)):
        return False
    return len(meta_trainer.get("finished_phases", [])) >= len(resolve_phases(cfg))


def check_phase_length(old_cfg, cfg, state, train_dataset, length, step_dir):
    """A resumed phase may get longer or shorter (a new steps/tokens) only where the samples it already consumed
    keep their order (`train_dataset` is its new training data, `length` its new number of steps), and not below
    the steps already done. Raises ConfigError naming the key."""
    from megasnow.train.config import phase_steps, resolve_phases
    from megasnow.train.data import build_phase_datasets

    i, gbs = state.phase, cfg.train.global_batch_size
    key = f"phases[{i}].steps/tokens" if cfg.phases else "train.steps/tokens"
    if length < state.step_in_phase:
        raise ConfigError(f"{key}: the phase now has {length} steps but the checkpoint {step_dir} is "
                          f"{state.step_in_phase} steps into it; give at least that many")
    old_phase = resolve_phases(old_cfg)[i]
    old_steps = phase_steps(old_phase, old_cfg)
    old_train, _ = build_phase_datasets(old_phase, old_cfg, None if old_steps is None else old_steps * gbs, 0)
    if not same_consumed_order(old_train, train_dataset, state.consumed_samples):
        raise ConfigError(f"{key}: the new length reorders the {state.consumed_samples:,} samples this phase has "
                          f"already trained on (the blend now needs another number of epochs), so resuming would "
                          f"repeat some and skip others; keep the length, or set checkpoint.allow_config_change=true "
                          f"to resume anyway")


def same_consumed_order(old_dataset, new_dataset, consumed, probes=16):
    """Whether the first `consumed` samples are the same in both datasets, checked at `probes` spread positions
    (first and last included). A different length can reorder them (another epoch count reshuffles)."""
    if consumed == 0:
        return True
    if min(len(old_dataset), len(new_dataset)) < consumed:
        return False
    step = max(1, (consumed - 1) // max(1, probes - 1))
    positions = sorted(set(list(range(0, consumed, step)) + [consumed - 1]))
    return all(list(old_dataset[i]) == list(new_dataset[i]) for i in positions)


def flatten(value, prefix=""):
    """{"train.steps": 4, "phases[0].blend[1].path": "x", ...} from nested dicts and lists."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _classify(key, phase_index, explicit_phases, distributed_optimizer):
    section = key.split(".", 1)[0].split("[", 1)[0]
    if key in FIXED_KEYS:
        return "refused"
    if section == "model":
        return "allowed" if key in RUNTIME_MODEL_KEYS else "refused"
    if key == "parallel.bucket_size_mb":  # shards the ZeRO-1 optimizer state by bucket
        return "refused" if distributed_optimizer else "allowed"
    if key.startswith("data.blend"):  # the single implicit phase, always the current one
        return "allowed" if explicit_phases else "refused"
    if key in ("train.steps", "train.tokens"):
        return "allowed" if explicit_phases else "length"
    if key == "phases":  # from one implicit phase to a list of phases, or back
        return "refused"
    if section == "phases":
        index = int(key[len("phases["):key.index("]")])
        field = key[key.index("]") + 2:].split(".", 1)[0].split("[", 1)[0]
        if index > phase_index or field in MUTABLE_PHASE_FIELDS:
            return "allowed"
        if index == phase_index and field in LENGTH_FIELDS:
            return "length"
        return "refused"
    return "allowed"


def _phase_count_changed(changes):
    return any(k.startswith("phases") and (o is ABSENT or n is ABSENT or k == "phases")
               for k, o, n in changes.allowed + changes.refused)


def _same(key, old, new):
    if old == new:
        return True
    if isinstance(old, str) and isinstance(new, str) and (key.endswith(".path") or key == "data.tokenizer"):
        return os.path.realpath(old) == os.path.realpath(new)
    return False


def _show(value):
    return "(absent)" if value is ABSENT else repr(value) if isinstance(value, str) else str(value)
