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
