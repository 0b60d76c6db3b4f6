"""The continued-pretraining arms and how their token counts are matched.

Every arm trains the same number of optimizer steps N from the same phase-1 checkpoint, with the same global batch
and sequence length, so each trains exactly N x global_batch_size x seq_len tokens. N is the largest count every
arm's data can fill: a selection holds at least its budget (selection.py overshoots by at most one document per
language), so `repeats` passes over a `budget` selection and one pass over a `repeats x budget` selection both hold
at least (repeats x budget - 1) // seq_len samples (GPTDataset: (epochs x tokens - 1) // seq_len).
"""
import re
from dataclasses import dataclass

from megasnow.config import ConfigError

KINDS = ("selected", "random", "selected_once")


@dataclass(frozen=True)
class ArmSpec:
    """One arm: `source` 'selected' (an annotator's top documents) or 'random' (random scores, same selection
    rule, so the same token budget and phase-1 language mix); `budget_tokens` of data seen `repeat` times."""

    name: str
    source: str
    annotator: str
    budget_tokens: int
    repeat: int

    @property
    def folder_name(self):
        return self.name.replace("@", "-")

    def dataset_key(self, seed):
        """The name of the binarized data this arm trains on (random data is drawn per seed)."""
        if self.source == "random":
            return f"random-{self.budget_tokens}-seed{seed}"
        return f"selected-{self.annotator}-{self.budget_tokens}"

    def describe(self):
        what = "random phase-1 documents" if self.source == "random" else f"annotator {self.annotator}'s top documents"
        return f"{self.budget_tokens:,} tokens of {what} x {self.repeat}"


def parse_arm(text, cfg, where):
    ab = cfg.ablation
    names = [a.name for a in cfg.annotators]
    m = re.fullmatch(r"(selected|random|selected_once)(?:@([A-Za-z0-9_-]+))?", text or "")
    if not m:
        raise ConfigError(f"{where}: unknown arm {text!r} (use {', '.join(KINDS)} or selected@ANNOTATOR)")
    kind, annotator = m.group(1), m.group(2)
    if annotator is not None and annotator not in names:
        raise ConfigError(f"{where}: {text!r} names annotator {annotator!r}, not one of annotators[].name {names}")
    if kind == "random" and annotator is not None:
        raise ConfigError(f"{where}: the random arm takes no annotator ({text!r}); write `random`")
    annotator = annotator or names[0]
    if kind == "selected_once":
        return ArmSpec(text, "selected", annotator, ab.budget_tokens * ab.repeats, 1)
    if kind == "random":
        return ArmSpec(text, "random", annotator, ab.budget_tokens, ab.repeats)
    return ArmSpec(text, "selected", annotator, ab.budget_tokens, ab.repeats)


def parse_arms(cfg):
    """The ArmSpecs of cfg.ablation.arms (ConfigError on an unknown or repeated arm)."""
    arms = [parse_arm(a, cfg, f"ablation.arms[{i}]") for i, a in enumerate(cfg.ablation.arms)]
    seen = {}
    for i, arm in enumerate(arms):
        key = (arm.source, arm.annotator if arm.source == "selected" else "", arm.budget_tokens, arm.repeat)
        if key in seen:
            raise ConfigError(f"ablation.arms[{i}] {arm.name!r} is the same arm as {seen[key]!r}")
        seen[key] = arm.name
    return arms


def matched_steps(cfg):
    """(steps, tokens per arm): every arm's optimizer steps and the tokens they train."""
    seq_len, gbs = trainer_shape(cfg)
    ab = cfg.ablation
    fill = (ab.repeats * ab.budget_tokens - 1) // seq_len // gbs
    if fill < 1:
        raise ConfigError(f"ablation.budget_tokens x repeats = {ab.repeats * ab.budget_tokens:,} tokens is less than "
                          f"one global batch of {gbs} x {seq_len} tokens; raise the budget")
    if ab.steps is not None and ab.steps > fill:
        raise ConfigError(f"ablation.steps={ab.steps} needs more data than every arm holds ({fill} steps of {gbs} x "
                          f"{seq_len} tokens fit in {ab.repeats} x {ab.budget_tokens:,}); lower it or leave it unset")
    steps = ab.steps or fill
    return steps, steps * gbs * seq_len


def trainer_shape(cfg):
    """(seq_len, global_batch_size) of every run, from the `trainer` section (megasnow.train defaults otherwise)."""
    from megasnow.train.config import DataSection, TrainSection

    seq_len = (cfg.trainer.get("data") or {}).get("seq_len", DataSection.seq_len)
    gbs = (cfg.trainer.get("train") or {}).get("global_batch_size", TrainSection.global_batch_size)
    return int(seq_len), int(gbs)


def arm_data_seed(cfg, seed):
    return cfg.runner.data_seed + 1 + seed
