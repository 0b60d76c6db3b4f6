"""Bad curation settings are one error naming the key and its valid range (or the right name) before any work, a failed
start leaves nothing behind, a refused rerun names what changed, and a resumed run reports its own rate."""
import dataclasses
import os
import re
import shutil
import typing

import pytest

from megasnow.config import ConfigError, load_config
from megasnow.curate import pipeline
from megasnow.curate.config import CurateConfig
from megasnow.curate.pipeline import PipelineError, run_differences, run_pipeline
from megasnow.curate.summary import summary_lines
from tests.curate.corpus import write_jsonl
from tests.curate.test_curate_cli import curate, error_line, records

# every numeric key of the config: a value out of its range and the range the error must state
BAD_VALUES = {
    "source.max_file_bytes": ("0", ">= 1"),
    "source.repo_shard_bytes": ("-1", ">= 1"),
    "filters.default.max_line_length": ("0", ">= 1"),
    "filters.default.max_mean_line_length": ("0", "> 0"),
    "filters.default.min_alphanum_fraction": ("1.5", "in [0, 1]"),
    "filters.default.autogen_lines": ("-1", ">= 0"),
    "filters.default.encoded_max_match_chars": ("-5", ">= 0"),
    "filters.default.encoded_max_fraction": ("-0.1", "in [0, 1]"),
    "filters.default.data_min_chars": ("-1", ">= 0"),
    "filters.default.data_max_chars": ("10", ">= 50"),  # below data_min_chars
    "decontamination.min_substring_chars": ("0", ">= 1"),
    "decontamination.ngram": ("0", ">= 1"),
    "decontamination.ngram_min_fraction": ("0", "in (0, 1]"),
    "near_dedup.threshold": ("1.5", "in (0, 1)"),
    "near_dedup.num_perm": ("-3", "in [1, 4096]"),
    "near_dedup.ngram": ("0", ">= 1"),
    "near_dedup.bands": ("-1", ">= 0"),
    "near_dedup.rows": ("-2", ">= 0"),
    "near_dedup.false_positive_weight": ("-1", ">= 0"),
    "near_dedup.false_negative_weight": ("-1", ">= 0"),
    "near_dedup.seed": ("-1", ">= 0"),
    "near_dedup.threads": ("0", ">= 1"),
    "near_dedup.batch_size": ("0", ">= 1"),
    "documents.max_chars": ("0", ">= 1"),
    "documents.partition_bytes": ("0", ">= 1"),
    "workers": ("0", ">= 1"),
    "progress_interval_s": ("-1", ">= 0"),
}
UNRESTRICTED = {"documents.seed"}  # only hashed: every integer is valid


def numeric_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from numeric_keys(hints[f.name], key)
        elif hints[f.name] in (int, float):
            yield key


def test_every_numeric_key_has_a_range_check():
    assert set(numeric_keys(CurateConfig)) == set(BAD_VALUES) | UNRESTRICTED


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_out_of_range_value_names_the_key_and_its_range(key):
    value, valid = BAD_VALUES[key]
    with pytest.raises(ConfigError) as e:
        load_config(CurateConfig, overrides=[f"{key}={value}"])
    assert str(e.value).startswith(f"{key} must be {valid}, got "), str(e.value)


def test_nan_and_inconsistent_combinations_are_refused():
    for overrides, text in ((["near_dedup.threshold=nan"], "near_dedup.threshold must be in (0, 1), got nan"),
                            (["near_dedup.bands=5"], "set both"),
                            (["near_dedup.bands=20", "near_dedup.rows=20"], "must be <= near_dedup.num_perm (256)"),
                            (["near_dedup.false_positive_weight=0", "near_dedup.false_negative_weight=0"], "both 0"),
                            (["filters.languages.python.max_line_length=0"],
                             "filters.languages.python.max_line_length must be >= 1"),
                            (["source.languages=[]"], "source.languages is empty")):
        with pytest.raises(ConfigError, match=re.escape(text)):
            load_config(CurateConfig, overrides=overrides)
    bands = load_config(CurateConfig, overrides=["near_dedup.bands=16", "near_dedup.rows=16"]).near_dedup
    assert (bands.bands, bands.rows) == (16, 16)  # exactly num_perm is fine


@pytest.mark.parametrize("override,key,suggestion", [
    ("source.languages=[python,pyton]", "source.languages[1]", "did you mean 'python'?"),
    ("source.languages=[C++]", "source.languages[0]", "did you mean 'cpp'?"),  # an alias: the slug is named
    ("filters.languages.javascrpt.max_line_length=5", "filters.languages", "did you mean 'javascript'?"),
    ("filters.default.data_languages=[yml]", "filters.default.data_languages[0]", "did you mean 'yaml'?"),
])
def test_unknown_language_names_the_key_and_suggests_the_slug(override, key, suggestion):
    with pytest.raises(ConfigError) as e:
        load_config(CurateConfig, overrides=[override])
    text = str(e.value)
    assert text.startswith(f"{key}: unknown language") and suggestion in text and "supported: python, java" in text


def test_bad_values_from_the_tool_are_one_line_and_the_corrected_rerun_works(tmp_path):
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(2))
    out = tmp_path / "out"
    for override, text in (("near_dedup.threshold=1.5", "near_dedup.threshold must be in (0, 1), got 1.5"),
                           ("near_dedup.num_perm=-3", "near_dedup.num_perm must be in [1, 4096], got -3"),
                           ("source.languages=[pyton]", "did you mean 'python'?"),
                           ("source.content_field=text", "did you mean source.content_field=content?")):
        line = error_line(curate("--input", good, "--output", str(out), override))
        assert text in line, line
        assert not out.exists()
    (tmp_path / "code.parquet").write_bytes(b"PAR1")
    line = error_line(curate("--input", good, "--output", str(tmp_path / "code.parquet")))
    assert line.startswith("error: --output ") and "code.parquet" in line and "not a folder" in line
    proc = curate("--input", good, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 files kept in 2 documents" in proc.stdout


def test_a_content_field_no_record_has_is_an_error_naming_the_fields(tmp_path):
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(3))
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError) as e:
        run_pipeline([good], out, load_config(CurateConfig, overrides=["source.content_field=text"]))
    assert str(e.value) == (f"source.content_field='text': none of the 3 records of the input ({good}) has a string "
                            "field 'text'; their fields are content, lang, max_stars_repo_name, max_stars_repo_path; "
                            "did you mean source.content_field=content?")
    with pytest.raises(ConfigError, match=r"source.repo_field='repo'.*did you mean one of max_stars_repo_name, "):
        run_pipeline([good], out, load_config(CurateConfig, overrides=["source.repo_field=repo"]))
    assert not os.path.exists(out)
    # a few records without the field are counted as malformed, as before
    rows = records(3)
    del rows[1]["content"]
    mixed = write_jsonl(str(tmp_path / "mixed.jsonl"), rows)
    stats = run_pipeline([mixed], out, load_config(CurateConfig))
    assert stats["bad_input"] == {"malformed record (no string field 'content')": 1}


def test_a_failed_start_or_first_stage_leaves_nothing_behind(tmp_path, monkeypatch):
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(2))
    out = tmp_path / "out"

    def broken(*args):
        raise RuntimeError("bug in a stage")

    monkeypatch.setattr(pipeline, "_run_stages", broken)
    with pytest.raises(RuntimeError, match="bug in a stage"):
        run_pipeline([good], str(out), load_config(CurateConfig))
    assert not out.exists()
    out.mkdir()  # an existing empty folder is left empty
    with pytest.raises(RuntimeError):
        run_pipeline([good], str(out), load_config(CurateConfig))
    assert os.listdir(out) == []
    monkeypatch.undo()
    run_pipeline([good], str(out), load_config(CurateConfig))  # the corrected run is not refused
    shutil.rmtree(out / "work" / "done" / "documents")
    monkeypatch.setattr(pipeline, "_run_stages", broken)
    with pytest.raises(RuntimeError):  # finished tasks are kept for the resume
        run_pipeline([good], str(out), load_config(CurateConfig))
    assert os.path.isdir(out / "work" / "done" / "prepare")


def test_a_refused_rerun_names_what_changed(tmp_path):
    good = write_jsonl(str(tmp_path / "in.jsonl"), records(2))
    other = write_jsonl(str(tmp_path / "other.jsonl"), records(1))
    out = str(tmp_path / "out")
    run_pipeline([good], out, load_config(CurateConfig))
    with pytest.raises(PipelineError) as e:
        run_pipeline([good], out, load_config(CurateConfig, overrides=["near_dedup.threshold=0.8", "workers=2"]))
    assert f"{out} holds a run with a different config or inputs (near_dedup.threshold 0.7 -> 0.8); " in str(e.value)
    with pytest.raises(PipelineError, match=r"\(--input changed \(new .*other.jsonl; the run used .*in.jsonl\)\)"):
        run_pipeline([good, other], out, load_config(CurateConfig))
    old = {"config": {"a": {"b": 1}, "c": 2}, "inputs": ["/x", "/y"]}
    assert run_differences(old, {"config": {"a": {"b": 1}, "c": 2}, "inputs": ["/x", "/y"]}) == []
    assert run_differences(old, {"config": {"a": {"b": 3}, "d": 4}, "inputs": ["/y", "/x"]}) == [
        "a.b 1 -> 3", "c 2 -> '<absent>'", "d '<absent>' -> 4",
        "--input changed (same paths, other order; the run used /x /y)"]


def test_a_resumed_run_reports_the_rate_of_its_own_reading(tmp_path):
    shards = [write_jsonl(str(tmp_path / f"in{i}.jsonl"), records(2 + i)) for i in range(2)]
    out = str(tmp_path / "out")
    first = run_pipeline(shards, out, load_config(CurateConfig))
    assert first["this_launch"]["files_in"] == 5 and first["this_launch"]["tasks_done_before"] == 0
    assert summary_lines(first, out, shards)[0].startswith("curated 5 files (")
    os.unlink(os.path.join(out, "work", "done", "prepare", "00001.json"))  # the second shard (3 files) again
    again = run_pipeline(shards, out, load_config(CurateConfig))
    launch = again["this_launch"]
    assert (launch["files_in"], launch["prepare_tasks"], launch["prepare_tasks_done_before"]) == (3, 1, 1)
    line = summary_lines(again, out, shards)[0]
    assert line.startswith("curated 5 files (") and "resumed (" in line and "1 of 2 input shards read before" in line
    assert "this launch read 3 files (" in line
    rest = run_pipeline(shards, out, load_config(CurateConfig))
    assert "this launch read no input and ran 0 remaining tasks" in summary_lines(rest, out, shards)[0]
