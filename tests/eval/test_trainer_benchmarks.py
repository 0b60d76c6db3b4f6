"""The trainer's benchmark hooks: the benchmark-solution loss every N steps (and at the phase end) in metrics.jsonl
and TensorBoard, equal to the loss of the saved weights; the same numbers with pipeline parallelism; greedy pass@1
on a subset; a bad benchmark file or a missing tokenizer refused before step 1."""
import json
import os

import numpy as np
import pytest

from megasnow.config import ConfigError
from megasnow.data.indexed import IndexedDatasetBuilder, data_file_path, index_file_path
from megasnow.parallel.spawn import run_processes
from tests.train.helpers import real_code_files, tiny_config, train_in_process, write_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
BENCHES = [os.path.join(FIXTURES, "mbpp_mini.jsonl"), os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")]


@pytest.fixture(scope="module")
def run_files(tiny, tmp_path_factory):
    """A tokenized dataset of standard-library files with the tiny model's BPE tokenizer, and that tokenizer."""
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.train.checkpoint import resolve_latest

    tok_path = os.path.join(resolve_latest(tiny[0]), "tokenizer.json")
    tok = load_tokenizer(tok_path)
    prefix = str(tmp_path_factory.mktemp("data") / "code")
    builder = IndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    for path in real_code_files(limit=12):
        builder.add_item(np.array(tok.encode(open(path, encoding="utf-8").read()[:3000]) + [tok.eod_id],
                                  dtype=np.uint16))
        builder.end_document()
    builder.finalize(index_file_path(prefix))
    return prefix, tok_path


def make_config(tmp_path, run_files, steps=4, eval=None, **sections):
    prefix, tok = run_files
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": steps}],
                      model={"preset": "tiny", "vocab_size": 512, "max_seq_len": 128},
                      data={"seq_len": 64, "seed": 7, "tokenizer": tok},
                      eval={"benchmark_loss_interval": 3, "benchmark_files": BENCHES, **(eval or {})}, **sections)
    return write_config(tmp_path / "run.yaml", cfg)


def records(log_dir, kind):
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("kind") == kind]


def test_benchmark_loss_is_logged_and_equals_the_saved_weights(tmp_path, run_files):
    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.eval.solution_loss import megasnow_logits_fn, solution_loss_per_task, tokenize_solutions
    from megasnow.eval.tasks import load_benchmark

    path = make_config(tmp_path, run_files, log={"tensorboard": True})
    train_in_process(path)
    got = records(str(tmp_path / "log"), "benchmark")
    assert [r["step"] for r in got] == [3, 4]  # every 3 steps and at the phase's end
    model, _ = build_megasnow_model(str(tmp_path / "ckpt"))  # step 4
    tok = load_tokenizer(run_files[1])
    for bench, name in zip(BENCHES, ("mbpp_mini", "humaneval_plus_mini")):
        st = tokenize_solutions(load_benchmark(bench).tasks, tok, 65)
        ref = solution_loss_per_task(megasnow_logits_fn(model), st)
        assert got[-1][f"{name}_loss"] == pytest.approx(ref["loss"], abs=1e-4)
    assert got[0]["mbpp_mini_loss"] != got[1]["mbpp_mini_loss"]
    acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator(
        str(tmp_path / "log" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("benchmark/mbpp_mini_loss")] == [3, 4]


def _pipeline_run(rank, world, config):
    train_in_process(config, "parallel.pipeline=2", "checkpoint.dir=null")
    return "ok"


def test_pipeline_parallel_logs_the_same_benchmark_loss(tmp_path, run_files):
    single = make_config(tmp_path / "one", run_files, steps=3)
    train_in_process(single, "checkpoint.dir=null")
    pp2 = make_config(tmp_path / "pp2", run_files, steps=3)
    assert run_processes(_pipeline_run, 2, (pp2,), timeout_s=180) == ["ok", "ok"]
    one, two = records(str(tmp_path / "one" / "log"), "benchmark"), records(str(tmp_path / "pp2" / "log"), "benchmark")
    assert [r["step"] for r in two] == [3]
    assert two[0]["mbpp_mini_loss"] == pytest.approx(one[0]["mbpp_mini_loss"], abs=1e-4)


def test_greedy_pass_at_1_subset(tmp_path, run_files, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the canonical runs' cache
    path = make_config(tmp_path, run_files, steps=2,
                       eval={"benchmark_loss_interval": 0, "pass_at_1_interval": 2, "pass_at_1_tasks": 2,
                             "pass_at_1_max_tokens": 8, "benchmark_files": BENCHES[:1]})
    train_in_process(path, "checkpoint.dir=null")
    got = records(str(tmp_path / "log"), "benchmark")
    assert [r["step"] for r in got] == [2] and got[0]["mbpp_mini_pass@1"] == 0.0 and got[0]["mbpp_mini_tasks"] == 2


def test_bad_settings_fail_before_the_first_step(tmp_path, run_files):
    path = make_config(tmp_path, run_files, eval={"benchmark_files": [str(tmp_path / "absent.jsonl")]})
    with pytest.raises(ConfigError, match=r"eval.benchmark_files: benchmark '.*absent.jsonl': no such file"):
        train_in_process(path)
    assert not os.path.exists(tmp_path / "log" / "metrics.jsonl") or records(str(tmp_path / "log"), "train") == []
    path = make_config(tmp_path, run_files)
    with pytest.raises(ConfigError, match="eval.benchmark_loss_interval needs data.tokenizer"):
        train_in_process(path, "data.tokenizer=null", "model.vocab_size=512")
