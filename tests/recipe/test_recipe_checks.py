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
    _write(metrics, [{"kind": "train", "step": 1, "step_time_s": 5.0},
                     {"kind": "train", "step": 2, "step_time_s": 5.0}])
    earlier = _read_segments(str(segments))
    assert _seconds_before_resume(str(metrics), earlier) == 28.25
    assert _seconds_before_resume(str(tmp_path / "missing.jsonl"), earlier) == 28.25
    # a resumed launch: the larger of the recorded wall time and the logged step times up to the resumed step
    _write(metrics, [{"kind": "train", "step": 1, "step_time_s": 20.0},
                     {"kind": "train", "step": 2, "step_time_s": 20.0}, {"kind": "resume", "step": 2}])
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


def _plan(tokens_per_arm, budget=1000, repeats=2):
    runs = [{"arm": "selected", "source": "selected", "annotator": "a", "budget_tokens": budget, "repeat": repeats,
             "data": "selected-a"},
            {"arm": "selected_once", "source": "selected", "annotator": "a", "budget_tokens": budget * repeats,
             "repeat": 1, "data": "selected-a-x2"},
            {"arm": "random", "source": "random", "annotator": "a", "budget_tokens": budget, "repeat": repeats,
             "data": "random-seed0"}]
    return {"tokens_per_arm": tokens_per_arm, "runs": runs}


def test_repetition_arms_that_do_not_repeat_are_warned_with_the_numbers():
    from megasnow.recipe.runner import repetition_warnings

    assert repetition_warnings(_plan(1990)) == []  # 1.99 passes of the budget: as planned
    lines = repetition_warnings(_plan(1000))  # ablation.steps too low: 1 pass where 2 are meant
    assert lines[0].startswith("warning: arm selected is meant to see its data 2 time(s) but trains 1,000 tokens = "
                               "1.00 passes over its 1,000-token budget") and "raise ablation.steps" in lines[0]
    # the trial: 3 large documents chosen for both budgets; each arm trains 0.17 passes
    same = {"selected_tokens": 11_700, "selected_documents": 3}
    datasets = {"selected-a": same, "selected-a-x2": dict(same), "random-seed0": {"selected_tokens": 1000,
                                                                                  "selected_documents": 9}}
    lines = repetition_warnings(_plan(1990), datasets)
    assert lines[0] == ("warning: arm selected is meant to see its data 2 time(s) but trains 1,990 tokens = 0.17 "
                        "passes over its 11,700-token selection (3 documents for a 1,000-token budget): the repetition "
                        "comparison is not what it says; the selection overshoots its budget (documents are large next "
                        "to it): raise ablation.budget_tokens or use smaller documents")
    assert lines[1].startswith("warning: arm selected_once is meant to see its data 1 time(s) but trains 1,990 "
                               "tokens = 0.17 passes")
    assert lines[2] == ("warning: arms selected and selected_once train on the same 3 documents (11,700 tokens): "
                        "their budgets select the same set, so they differ in nothing but the sample order")
    assert len(lines) == 3  # the random arm repeats as meant


def test_budget_tokens_in_yaml_accept_the_suffixes_annotate_accepts(tmp_path):
    from megasnow.config import ConfigError, load_config
    from megasnow.recipe.config import AblationConfig

    assert load_config(AblationConfig, None, ["ablation.budget_tokens=12.5B"]).ablation.budget_tokens == 12_500_000_000
    path = tmp_path / "c.yaml"
    path.write_text("ablation:\n  budget_tokens: 40k\n")
    assert load_config(AblationConfig, str(path)).ablation.budget_tokens == 40_000
    with pytest.raises(ConfigError, match=r"ablation.budget_tokens: not a token count: 'lots'"):
        load_config(AblationConfig, None, ["ablation.budget_tokens=lots"])


def test_report_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    from megasnow.recipe.report import ReportError, write_recipe_report

    with pytest.raises(ReportError, match=f"^{tmp_path / 'nope'}: does not exist; give the --output folder"):
        write_recipe_report(str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()
