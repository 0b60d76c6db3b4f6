"""The shipped ablation configs parse, name only known keys, and match their token counts as their comments say."""
import os

import pytest
import yaml

from megasnow.config import ConfigError, from_dict
from megasnow.recipe.arms import matched_steps, parse_arms
from megasnow.recipe.config import AblationConfig, check_trainer_section
from tests.recipe.tiny_setting import REPO


def _load(name):
    with open(os.path.join(REPO, "examples", "recipe", name)) as f:
        cfg = from_dict(AblationConfig, yaml.safe_load(f))
    check_trainer_section(cfg.trainer)
    return cfg


def test_local_cpu_config():
    cfg = _load("local-cpu.yaml")
    assert [a.name for a in parse_arms(cfg)] == ["selected", "random", "selected_once"]
    assert matched_steps(cfg) == (62, 253_952)  # the figures in its comments and benchmarks/results/recipe.md
    assert cfg.base.steps == 144 and cfg.annotators[0].positives[0].paths


def test_full_scale_config():
    cfg = _load("snowcoder-1.3b.yaml")
    arms = {a.name: a for a in parse_arms(cfg)}
    assert arms["selected_once"].budget_tokens == 50_000_000_000 and arms["selected_once"].repeat == 1
    assert arms["selected@files-only"].annotator == "files-only" and arms["selected"].annotator == "files-instructions"
    steps, tokens = matched_steps(cfg)
    assert steps == (4 * 12_500_000_000 - 1) // 8192 // 512 and tokens == steps * 512 * 8192  # ~50B tokens
    assert cfg.runner.command[:1] == ["torchrun"]


def test_trainer_section_may_not_set_what_the_runner_writes():
    with pytest.raises(ConfigError, match=r"trainer.data.seed: the runner sets this key"):
        check_trainer_section({"data": {"seed": 3}})
    with pytest.raises(ConfigError, match=r"trainer.checkpoint: the runner writes this section"):
        check_trainer_section({"checkpoint": {"dir": "x"}})
    with pytest.raises(ConfigError, match=r"trainer.optim.bogus"):
        check_trainer_section({"optim": {"bogus": 1}})
