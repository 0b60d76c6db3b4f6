"""The example configs parse and give the paper's numbers: 4M tokens per step, 500B / 50B / 5B token phases."""
import os

from megasnow.train.config import load_train_config, phase_steps, resolve_phases
from megasnow.train.schedules import lr_at
from tests.train.helpers import REPO

EXAMPLES = os.path.join(REPO, "examples", "snowcoder")


def test_snowcoder_1p3b_three_phases():
    cfg = load_train_config(os.path.join(EXAMPLES, "snowcoder-1.3b.yaml"))
    assert cfg.train.global_batch_size * cfg.data.seq_len == 512 * 8192
    phases = resolve_phases(cfg)
    assert [phase_steps(p, cfg) for p in phases] == [119210, 11921, 1193]  # ceil(tokens / 4,194,304)
    assert phases[1].blend[0].repeat == 4
    p1, p2 = phases[0], phases[1]
    assert lr_at(599, p1.schedule, 119210) == 5.3e-4
    assert abs(lr_at(119209, p1.schedule, 119210) - 5.3e-5) < 1e-9
    assert lr_at(0, p2.schedule, 11921) == 5.3e-4 / 1000  # re-warms from 0
    assert lr_at(999, p2.schedule, 11921) == 5.3e-4
    assert lr_at(11921, p2.schedule, 11921) == 0.0


def test_tiny_cpu_phases_parse():
    cfg = load_train_config(os.path.join(EXAMPLES, "tiny-cpu.yaml"))
    phases = resolve_phases(cfg)
    assert [p.name for p in phases] == ["phase1-general", "phase2-quality", "phase3-synthetic"]
    assert [p.schedule.style for p in phases] == ["cosine", "linear", "linear"]
    assert phases[1].blend[0].repeat == 4
    # phase 3: the synthetic files blended with the phase-2 selection (the paper's ~2B synthetic of 5B tokens)
    assert [(os.path.basename(b.path), b.weight) for b in phases[2].blend] == [
        ("synthetic_text_document", 0.4), ("phase2_text_document", 0.6)]
    assert cfg.eval.benchmark_loss_interval > 0 and cfg.eval.benchmark_files == ["humaneval"]
    # the quickstart's budget (benchmarks/results/quickstart.md): steps of 16 x 256 tokens; phase 2's 4 passes over
    # the selected data fix its length
    assert [p.steps for p in phases] == [100, None, 16] and cfg.train.global_batch_size * cfg.data.seq_len == 4096
