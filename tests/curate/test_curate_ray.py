"""The same curation input gives byte-identical outputs on local processes and on Ray (2 workers each)."""
from megasnow.config import load_config
from megasnow.curate.config import CurateConfig
from megasnow.curate.executors import run_tasks, shutdown_executors
from megasnow.curate.pipeline import run_pipeline
from tests.curate.corpus import copy_stdlib_repos, planted_records, write_jsonl
from tests.curate.test_curate_resume import output_bytes


def test_local_and_ray_outputs_identical(tmp_path):
    repos = copy_stdlib_repos(str(tmp_path / "repos"), ["json", "html", "tomllib", "wsgiref"])
    records, _ = planted_records()
    stack = tmp_path / "stack"
    stack.mkdir()
    write_jsonl(str(stack / "a.jsonl"), records[: len(records) // 2])
    write_jsonl(str(stack / "b.jsonl"), records[len(records) // 2:])
    inputs = [repos, str(stack)]
    overrides = ["workers=2", "source.repo_shard_bytes=1"]
    local = run_pipeline(inputs, str(tmp_path / "local"), load_config(CurateConfig, overrides=overrides))
    try:
        assert run_tasks(abs, [-3, 1, -2], executor="ray", workers=2) == [3, 1, 2]
        ray_stats = run_pipeline(inputs, str(tmp_path / "ray"),
                                 load_config(CurateConfig, overrides=overrides + ["executor=ray"]))
    finally:
        shutdown_executors()
    assert local["shards"] == ray_stats["shards"] == 6
    assert output_bytes(str(tmp_path / "local")) == output_bytes(str(tmp_path / "ray"))
    assert local["stages"] == ray_stats["stages"] and local["dedup"] == ray_stats["dedup"]
    assert local["stages"]["decontaminate"]["python"]["removed"] == {"humaneval": 2}
