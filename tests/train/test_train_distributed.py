"""The trainer on 2 gloo processes: data=2 and tensor=2 give the single-process per-step losses of the same global
batch, a 2-rank checkpoint resumes exactly, and layouts the batch or sequence cannot run are refused at set-up."""
import os

import pytest
import yaml

from megasnow.config import ConfigError
from megasnow.parallel.spawn import run_processes
from tests.train.helpers import losses, real_code_files, tiny_config, train_in_process, write_byte_dataset, write_config

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=20))


def make_config(run_dir, prefix):
    phases = [{"name": "only", "blend": [{"path": prefix}], "steps": STEPS,
               "schedule": {"style": "cosine", "max_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1}}]
    cfg = tiny_config(run_dir, phases, checkpoint={"interval": 2, "keep_last": 0})
    return write_config(run_dir / "run.yaml", cfg)


def _barrier():
    import torch.distributed as dist

    dist.barrier()


def _train_then_resume(rank, world, config, ckpt_dir, resume_log):
    """Train all steps, then point `latest` back at step 2 and resume into a fresh log folder."""
    train_in_process(config)
    if rank == 0:
        with open(os.path.join(ckpt_dir, "latest"), "w") as f:
            f.write("step_00000002\n")
    _barrier()
    train_in_process(config, f"log.dir={resume_log}")
    return "ok"


def _refusals(rank, world, config):
    """Messages of the set-up refusals for two layouts that only exist with 2 ranks."""
    out = []
    for overrides in (["parallel.pipeline=2", "parallel.virtual_pipeline=2", "train.global_batch_size=6"],
                      ["parallel.tensor=2", "parallel.sequence_parallel=true", "data.seq_len=31"]):
        try:
            train_in_process(config, *overrides)
            out.append(None)
        except ConfigError as e:
            out.append(str(e))
    return out


def step_losses(log_dir):
    return [r["loss"] for r in losses(str(log_dir))]


def test_data_parallel_matches_one_process_and_resumes_exactly(tmp_path, data):
    single = make_config(tmp_path / "single", data)
    train_in_process(single)
    reference = step_losses(tmp_path / "single" / "log")

    dp2 = make_config(tmp_path / "dp2", data)
    resume_log = tmp_path / "dp2" / "resumed_log"
    assert run_processes(_train_then_resume, 2, (dp2, str(tmp_path / "dp2" / "ckpt"), str(resume_log)),
                         timeout_s=120) == ["ok", "ok"]
    got = step_losses(tmp_path / "dp2" / "log")
    assert len(got) == len(reference) == STEPS
    assert got == pytest.approx(reference, abs=1e-5)  # same global batch: micro-batches 2 x 1 rank vs 1 x 2 ranks
    assert got[-1] < got[0]
    assert step_losses(resume_log) == got[2:]  # exact resume from the 2-rank checkpoint of step 2


def _tensor_parallel_then_refusals(rank, world, tp2_config, refusal_config):
    train_in_process(tp2_config, "parallel.tensor=2", "checkpoint.dir=null")
    return _refusals(rank, world, refusal_config)


def test_tensor_parallel_matches_one_process_and_bad_layouts_are_refused(tmp_path, data):
    """(One spawn for both: the process start-up is most of the cost.)"""
    single = make_config(tmp_path / "single", data)
    train_in_process(single, "checkpoint.dir=null")
    tp2 = make_config(tmp_path / "tp2", data)
    refuse = make_config(tmp_path / "refuse", data)
    interleaved, seq_parallel = run_processes(_tensor_parallel_then_refusals, 2, (tp2, refuse), timeout_s=120)[0]
    with open(tmp_path / "tp2" / "log" / "config.yaml") as f:
        assert yaml.safe_load(f)["parallel"]["tensor"] == 2
    assert step_losses(tmp_path / "tp2" / "log") == pytest.approx(step_losses(tmp_path / "single" / "log"), abs=1e-5)
    # refused at set-up, naming the keys to change
    assert "parallel.virtual_pipeline=2" in interleaved and "(3 = train.global_batch_size 6" in interleaved
    assert "multiple of parallel.pipeline (2)" in interleaved
    assert "data.seq_len (31) must be a multiple of parallel.tensor (2)" in seq_parallel
    assert not os.path.exists(tmp_path / "refuse" / "log" / "metrics.jsonl")  # before anything ran
