"""Cached answers made with another config (here sampling.max_tokens) are not used, and that is said: a folder none of
whose answers fits gets a warning naming the keys that differ; post-processing only, with no answer fitting, is an
error (exit 2) that leaves nothing behind. The caches are written by the pipeline's own writer (no server)."""
import json
import os

import pytest

from megasnow.errors import UserError
from megasnow.generation.protocol import Choice, GenerationResult
from megasnow.synth.cache import ChunkWriter, response_record
from megasnow.synth.pipeline import RUN_FILE, _prepare_output, run_synthesis
from megasnow.synth.plan import plan_requests
from megasnow.synth.seeds import plan_seeds
from megasnow.synth.templates import load_template
from tests.synth.conftest import run_tool
from tests.synth.helpers import fenced, make_cfg

ANSWER = fenced("python", "def area(width, height):\n    total = width * height\n    return total\n\n\n"
                          "print(area(3, 4))\n")


def config(seed_shard, max_tokens):
    return make_cfg(seeds={"documents": [seed_shard], "num_seeds": 6}, sampling={"max_tokens": max_tokens},
                    backend={"model": "m"}, execution={"progress": False})


def cached_run(folder, cfg):
    """A generate stage's folder for `cfg` as the pipeline writes it: answer chunks, run.json, config.yaml."""
    seeds = plan_seeds(cfg.seeds, progress=False).seeds
    planned = plan_requests(seeds, load_template(cfg.prompt), cfg.sampling, cfg.backend.model)
    _prepare_output(cfg, str(folder))
    writer = ChunkWriter(str(folder), "shard-00000-of-00001", flush_every=4)
    for p in planned:
        writer.add(response_record(p, GenerationResult(request_id=p.id, choices=[Choice(ANSWER, "stop", 30)],
                                                       prompt_tokens=11, completion_tokens=30, model="m")))
    writer.flush()
    (folder / RUN_FILE).write_text(json.dumps({"model": "m"}))
    return str(folder), len(planned)


def test_postprocess_only_with_no_fitting_answer_is_an_error_leaving_nothing(tmp_path, seed_shard, capsys):
    other, n = cached_run(tmp_path / "run8", config(seed_shard, 8))
    assert n == 6
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        run_synthesis(config(seed_shard, 16), str(out), stage="postprocess", extra_responses=[other])
    assert str(e.value) == (
        f"none of the 6 cached answers in {other} was made with this config (the 6 planned requests' content ids "
        f"hash the model, the rendered prompt, sampling and the seed selection; sampling.max_tokens 8 there, 16 "
        f"here); post-process with the config of the run that made them, or run the generate stage to ask again; "
        f"nothing written")
    assert not out.exists()
    # the config that made them uses all of them, without a warning
    s = run_synthesis(config(seed_shard, 8), str(out), stage="postprocess", extra_responses=[other])
    assert s["requests"]["answered"] == 6 and s["outputs"]["kept"] >= 1
    assert "warning" not in capsys.readouterr().err


def test_a_folder_of_stale_answers_beside_fitting_ones_is_named_in_a_warning(tmp_path, seed_shard, capsys):
    stale, _ = cached_run(tmp_path / "run8", config(seed_shard, 8))
    fresh, _ = cached_run(tmp_path / "run16", config(seed_shard, 16))
    s = run_synthesis(config(seed_shard, 16), str(tmp_path / "out"), stage="postprocess",
                      extra_responses=[stale, fresh])
    assert s["requests"]["answered"] == 6
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: 6 answers in {stale} were made with another config (model/template/sampling/seeds "
                        f"differ: sampling.max_tokens 8 there, 16 here), none used"]


def test_the_tool_exits_2_with_one_line(tmp_path, seed_shard):
    other, _ = cached_run(tmp_path / "run8", config(seed_shard, 8))
    r = run_tool("--seeds", seed_shard, "backend.model=m", "seeds.num_seeds=6", "sampling.max_tokens=16",
                 "execution.progress=false", "--output", str(tmp_path / "out"), "--stage", "postprocess",
                 "--responses", other)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: none of the 6 cached answers in {other} was made with this config (")
    assert len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "out")


def test_a_key_an_older_run_did_not_write_is_compared_by_its_default(tmp_path, seed_shard, capsys):
    """A cache made before sampling.top_k/min_p existed has no such keys in its config.yaml: it ran with their
    defaults, so a config that sets them is named as the difference ("0 there (unset), 40 here")."""
    import yaml

    stale, _ = cached_run(tmp_path / "old", config(seed_shard, 16))
    written = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    del written["sampling"]["top_k"], written["sampling"]["min_p"]  # as the run wrote it before they existed
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(written))
    cfg = make_cfg(seeds={"documents": [seed_shard], "num_seeds": 6}, sampling={"max_tokens": 16, "top_k": 40},
                   backend={"model": "m"}, execution={"progress": False})
    fresh, _ = cached_run(tmp_path / "new", cfg)
    run_synthesis(cfg, str(tmp_path / "out"), stage="postprocess", extra_responses=[stale, fresh])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: 6 answers in {stale} were made with another config (model/template/sampling/seeds "
                        f"differ: sampling.top_k 0 there (unset), 40 here), none used"]
