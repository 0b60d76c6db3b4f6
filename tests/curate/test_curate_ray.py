"""The same curation input gives byte-identical outputs on local processes and on Ray (2 workers each), odd entries
included, and a run left unfinished resumes with another worker count or executor to the same bytes; a failing
task names its shard and file on Ray as locally."""
import glob
import os

import pytest

from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.executors import run_tasks, shutdown_executors
from megasnow.curate.pipeline import CurationTaskError, run_pipeline
from tests.curate.corpus import copy_stdlib_repos, planted_records, stdlib_file, write_jsonl
from tests.curate.test_curate_cli import blocked_run
from tests.curate.test_curate_resume import output_bytes


def unfinish(out):
    """Make a finished run look killed: drop every other done marker and the final outputs."""
    markers = sorted(glob.glob(os.path.join(out, "work", "done", "*", "*.json")))
    for m in markers[::2]:
        os.unlink(m)
    os.unlink(os.path.join(out, "stats.json"))
    return len(markers[::2])


def test_local_and_ray_outputs_identical(tmp_path):
    repos = copy_stdlib_repos(str(tmp_path / "repos"), ["json", "html", "tomllib", "wsgiref"])
    os.symlink(os.path.join(repos, "json"), os.path.join(repos, "json-alias"))  # not a second repository
    with open(os.fsencode(repos) + b"/html/caf\xe9.py", "w") as f:  # a name that is not UTF-8
        f.write(stdlib_file("fnmatch.py"))
    os.mkfifo(os.path.join(repos, "wsgiref", "pipe.py"))  # never opened
    records, _ = planted_records()
    records[0] = {**records[0], "max_stars_repo_path": "lone\udc80surrogate.py"}
    stack = tmp_path / "stack"
    stack.mkdir()
    write_jsonl(str(stack / "a.jsonl"), records[: len(records) // 2])
    write_jsonl(str(stack / "b.jsonl"), records[len(records) // 2:])
    inputs = [repos, str(stack)]
    overrides = ["workers=2", "source.repo_shard_bytes=1"]
    cfg = lambda *more: load_config(CurateConfig, overrides=overrides + list(more))  # noqa: E731
    local_out, ray_out = str(tmp_path / "local"), str(tmp_path / "ray")
    local = run_pipeline(inputs, local_out, cfg())
    reference = output_bytes(local_out)
    try:
        assert run_tasks(abs, [-3, 1, -2], executor="ray", workers=2) == [3, 1, 2]
        ray_stats = run_pipeline(inputs, ray_out, cfg("executor=ray"))
        # execution-only keys may change on resume: a local 2-worker run finished on Ray with 1 worker
        dropped = unfinish(local_out)
        resumed = run_pipeline(inputs, local_out, cfg("executor=ray", "workers=1"))
        assert sum(resumed["tasks_executed"].values()) == dropped and output_bytes(local_out) == reference
    finally:
        shutdown_executors()
    assert local["shards"] == ray_stats["shards"] == 6
    assert output_bytes(ray_out) == reference
    assert local["stages"] == ray_stats["stages"] == resumed["stages"] and local["dedup"] == ray_stats["dedup"]
    assert local["stages"]["decontaminate"]["python"]["removed"] == {"humaneval": 2}
    assert local["bad_input"] == ray_stats["bad_input"]
    assert local["bad_input_examples"] == ray_stats["bad_input_examples"]
    assert local["bad_input"]["name not valid UTF-8"] == 2 and local["bad_input"]["symlink"] == 1
    assert local["bad_input"]["fifo"] == 1
    # ... and a Ray run finished locally with 1 worker and other signature threads
    dropped = unfinish(ray_out)
    again = run_pipeline(inputs, ray_out, cfg("workers=1", "near_dedup.threads=2"))
    assert sum(again["tasks_executed"].values()) == dropped and output_bytes(ray_out) == reference


def test_a_failing_task_names_its_shard_and_file_on_ray(tmp_path):
    inputs, out = blocked_run(tmp_path)
    try:
        with pytest.raises(CurationTaskError) as err:
            run_pipeline(inputs, out, load_config(CurateConfig, overrides=["executor=ray", "workers=2"]))
    finally:
        shutdown_executors()
    msg = str(err.value)
    assert f"prepare_shard of shard 00001 ({inputs[1]}) failed while reading {inputs[1]} (line 3): " \
           "IsADirectoryError" in msg, msg
