"""Fixtures of the recipe tests: the tiny setting's inputs (built once) and one finished tiny ablation."""
import os

import pytest

from tests.recipe.tiny_setting import build_inputs, tiny_config


@pytest.fixture(scope="session", autouse=True)
def _offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    return build_inputs(str(tmp_path_factory.mktemp("recipe_inputs")))


def run_ablation(cfg_dict, out_dir, lines=None):
    """Run a config dict in this process; returns the summary. `lines` collects the runner's progress lines."""
    from megasnow.config import from_dict
    from megasnow.recipe.config import AblationConfig, check_ablation_config
    from megasnow.recipe.runner import AblationRunner

    cfg = from_dict(AblationConfig, cfg_dict)
    check_ablation_config(cfg)
    log = (lines.append if lines is not None else (lambda msg: None))
    return AblationRunner(cfg, out_dir, log=log).run(report=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_inputs, tmp_path_factory):
    """The tiny ablation (3 arms x 2 seeds, in process), finished: (out_dir, config dict, summary, log lines)."""
    out = str(tmp_path_factory.mktemp("recipe_run") / "ablation")
    cfg = tiny_config(tiny_inputs)
    lines = []
    summary = run_ablation(cfg, out, lines)
    return out, cfg, summary, lines
