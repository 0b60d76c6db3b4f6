"""LR schedules: values at chosen steps for the recipe's schedules and the others."""
import math

import pytest

from megasnow.train.config import ScheduleSection
from megasnow.train.schedules import lr_at


def test_phase1_warmup_then_cosine_to_min():
    s = ScheduleSection(style="cosine", max_lr=5.3e-4, min_lr=5.3e-5, warmup_steps=600)
    total = 10600
    assert lr_at(0, s, total) == pytest.approx(5.3e-4 / 600)
    assert lr_at(299, s, total) == pytest.approx(5.3e-4 * 300 / 600)
    assert lr_at(599, s, total) == pytest.approx(5.3e-4)
    assert lr_at(600, s, total) == pytest.approx(5.3e-4)  # cosine starts at its top
    # halfway through the decay the cosine is at the midpoint of max and min
    assert lr_at(600 + 5000, s, total) == pytest.approx((5.3e-4 + 5.3e-5) / 2)
    q = 0.25
    assert lr_at(600 + 2500, s, total) == pytest.approx(5.3e-5 + 0.5 * (5.3e-4 - 5.3e-5) * (1 + math.cos(math.pi * q)))
    assert lr_at(total, s, total) == pytest.approx(5.3e-5)
    assert lr_at(total + 50, s, total) == pytest.approx(5.3e-5)  # holds at the minimum


def test_phase2_rewarm_from_zero_then_linear_to_zero():
    s = ScheduleSection(style="linear", max_lr=5.3e-4, min_lr=0.0, warmup_steps=1000, warmup_init_lr=0.0)
    total = 11000
    assert lr_at(0, s, total) == pytest.approx(5.3e-7)
    assert lr_at(499, s, total) == pytest.approx(2.65e-4)
    assert lr_at(999, s, total) == pytest.approx(5.3e-4)
    assert lr_at(1000 + 5000, s, total) == pytest.approx(2.65e-4)
    assert lr_at(total - 1, s, total) == pytest.approx(5.3e-4 / 10000)
    assert lr_at(total, s, total) == 0.0


def test_constant_with_and_without_warmup():
    s = ScheduleSection(style="constant", max_lr=1e-3, warmup_steps=0)
    assert [lr_at(i, s, 10) for i in (0, 5, 9)] == [1e-3] * 3
    s = ScheduleSection(style="constant", max_lr=1e-3, warmup_steps=4)
    assert [lr_at(i, s, 10) for i in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


@pytest.mark.parametrize("style,mid", [("linear", 0.5), ("cosine", 0.5), ("sqrt", 1 - math.sqrt(0.5))])
def test_warmup_stable_decay(style, mid):
    s = ScheduleSection(style="wsd", max_lr=1.0, min_lr=0.1, warmup_steps=10, wsd_decay_fraction=0.2,
                        wsd_decay_style=style)
    total = 110  # 100 post-warmup steps: stable for 80, decay over the last 20
    assert lr_at(4, s, total) == pytest.approx(0.5)
    assert lr_at(10, s, total) == 1.0
    assert lr_at(89, s, total) == 1.0
    assert lr_at(90, s, total) == pytest.approx(1.0)
    assert lr_at(100, s, total) == pytest.approx(0.1 + 0.9 * mid)
    assert lr_at(110, s, total) == pytest.approx(0.1)


def test_explicit_decay_steps():
    s = ScheduleSection(style="linear", max_lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=10)
    assert lr_at(5, s, 1000) == pytest.approx(0.5)
    assert lr_at(20, s, 1000) == 0.0


def test_warmup_longer_than_the_phase_is_named_with_its_key():
    from megasnow.train.schedules import warmup_warning

    s = ScheduleSection(style="linear", max_lr=1e-3, min_lr=0.0, warmup_steps=8)
    line = warmup_warning("phases[1]", "arm", s, 7, "phases[1].schedule.warmup_steps")
    assert line == ("warning: phases[1] (arm) warms up for 8 steps (phases[1].schedule.warmup_steps) but runs 7: "
                    "the LR never reaches max_lr 0.001 (peaks at 0.000875); lower phases[1].schedule.warmup_steps "
                    "or lengthen the phase")
    assert lr_at(6, s, 7) == pytest.approx(0.000875)
    assert warmup_warning("phases[1]", "arm", s, 8, "k") is None  # max_lr at the last step: fits
    assert warmup_warning("train", "main", s, None, "k") is None


def test_trainer_warns_at_start_up_per_phase(tmp_path, capsys):
    """Phase 0 inherits the top-level schedule (warmup 16 > 3 steps), phase 1 has its own (warmup 2 <= 2 steps)."""
    from tests.train.helpers import losses, real_code_files, tiny_config, train_in_process, write_byte_dataset, \
        write_config

    prefix = write_byte_dataset(str(tmp_path / "code"), real_code_files(limit=8))
    own = {"style": "linear", "max_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 2}
    cfg = tiny_config(tmp_path, [{"name": "base", "blend": [{"path": prefix}], "steps": 3},
                                 {"name": "arm", "blend": [{"path": prefix}], "steps": 2, "schedule": own}],
                      schedule={"style": "cosine", "max_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 16},
                      checkpoint={"dir": None})
    train_in_process(write_config(tmp_path / "run.yaml", cfg))
    want = ("warning: phases[0] (base) warms up for 16 steps (schedule.warmup_steps) but runs 3: the LR never "
            "reaches max_lr 0.003 (peaks at 0.000563); lower schedule.warmup_steps or lengthen the phase")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "warning" in line] == [want]  # phase 1's warmup fits
    assert [r["message"] for r in losses(str(tmp_path / "log"), "warning")] == [want]
