"""Small checks of the recipe runner's bookkeeping and config handling (no training): the counted training time of
interrupted launches, config-help defaults, budgets against the corpus, the repetition arm's warning."""
import json

import pytest

from megasnow.recipe.runner import _read_segments, _seconds_before_resume


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_an_interrupted_launch_without_a_resume_record_still_counts(tmp_path):
    """Ctrl-C after the last step (during the final evaluation): metrics.jsonl has no resume record, the rerun
    trains nothing; its time must still count (segments 28.25 s + 3.11 s -> 31.36 s, not 3.1 s)."""
    segments = tmp_path / "segments.jsonl"
    _write(segments, [{"seconds": 28.25}])
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, [{"kind": "train", "step": 1, "step_time_s": 5.0}, {"kind": "train", "step": 2, "step_time_s": 5.0}])
    earlier = _read_segments(str(segments))
    assert _seconds_before_resume(str(metrics), earlier) == 28.25
    assert _seconds_before_resume(str(tmp_path / "missing.jsonl"), earlier) == 28.25
    # a resumed launch: the larger of the recorded wall time and the logged step times up to the resumed step
    _write(metrics, [{"kind": "train", "step": 1, "step_time_s": 20.0}, {"kind": "train", "step": 2, "step_time_s": 20.0},
                     {"kind": "resume", "step": 2}])
    assert _seconds_before_resume(str(metrics), earlier) == 40.0
    assert _seconds_before_resume(str(metrics), 0.0) == 40.0


def test_config_help_shows_a_sections_factory_defaults():
    """ablation.schedule's factory (linear, min_lr 0, warmup 10) is the default, not ScheduleSection's own."""
    from megasnow.recipe.config import help_text

    lines = {line.split(" = ")[0].strip(): line.split(" = ")[1].split("    #")[0] for line in help_text().splitlines()
             if " = " in line}
    assert lines["ablation.schedule.style (Literal)"] == "'linear'"
    assert lines["ablation.schedule.min_lr (float)"] == "0.0"
    assert lines["ablation.schedule.warmup_steps (int)"] == "10"
    assert lines["base.schedule.style (Literal)"] == "'cosine'"  # the class's own defaults where no factory differs
    assert lines["base.schedule.warmup_steps (int)"] == "600"
