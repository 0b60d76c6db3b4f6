"""The trainer on 2 gloo processes: data=2 and tensor=2 give the single-process per-step losses of the same global
batch, a 2-rank checkpoint resumes exactly, and layouts the batch or sequence cannot run are refused at set-up."""
import os
from pathlib import Path

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


def masked_labels(self, samples, indices):
    """A stand-in loss mask: sample i ignores its first (7 i) mod (S + 1) labels, so micro-batches and ranks count
    different numbers of tokens (some none at all)."""
    labels = samples[:, 1:].clone()
    for row, i in enumerate(indices):
        labels[row, :(7 * int(i)) % (labels.shape[1] + 1)] = -100
    return labels


PER_TOKEN = ["checkpoint.dir=null", "train.calculate_per_token_loss=true"]
RESUMED_LAYOUTS = {"pp2": ["parallel.pipeline=2"],
                   "zero1": ["parallel.use_distributed_optimizer=true", "parallel.bucket_size_mb=0.001"]}
# A 3-layer model on 2 stages: 1 layer on the first, 2 on the second (parallel.pipeline_layers).
UNEVEN_PIPELINE = ["checkpoint.dir=null", "model.num_layers=3", "parallel.pipeline=2", "parallel.pipeline_layers=[1,2]"]
PER_TOKEN_LAYOUTS = {"dp2": PER_TOKEN, "dp2_mb1": PER_TOKEN + ["train.micro_batch_size=1"]}


def _two_rank_runs(rank, world, root, prefix):
    """One spawn for the tests below: pipeline=2 and data=2 + ZeRO-1 each train all steps, then resume from step 2
    into a fresh log folder; then, under a loss mask, data=2 with the per-token loss (micro-batches of 2 and 1)."""
    import torch.distributed as dist

    from megasnow.train.data import MicroBatches

    for name, overrides in RESUMED_LAYOUTS.items():
        config = make_config(Path(root) / name, prefix)
        train_in_process(config, *overrides)
        if rank == 0:
            with open(os.path.join(root, name, "ckpt", "latest"), "w") as f:
                f.write("step_00000002\n")
        dist.barrier()
        train_in_process(config, *overrides, f"log.dir={os.path.join(root, name, 'resumed_log')}")
    train_in_process(make_config(Path(root) / "dp2_saved", prefix))  # resumed on one rank below
    train_in_process(make_config(Path(root) / "pp2_uneven", prefix), *UNEVEN_PIPELINE)
    MicroBatches.labels = masked_labels
    for name, overrides in PER_TOKEN_LAYOUTS.items():
        train_in_process(make_config(Path(root) / name, prefix), *overrides)
    return "ok"


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("two_rank")
    assert run_processes(_two_rank_runs, 2, (str(root), data), timeout_s=240) == ["ok", "ok"]
    return root


def test_pipeline_and_distributed_optimizer_match_one_process_and_resume_exactly(tmp_path, data, two_rank_runs):
    """The trainer with pipeline=2 (1F1B over the 2 layers) and with data=2 + ZeRO-1 (its optimizer state sharded
    over both ranks, several buckets) gives the single-process losses, and a 2-rank checkpoint resumes exactly."""
    single = make_config(tmp_path / "single", data)
    train_in_process(single, "checkpoint.dir=null")
    reference = step_losses(tmp_path / "single" / "log")
    for name, key, value in (("pp2", "pipeline", 2), ("zero1", "use_distributed_optimizer", True)):
        with open(two_rank_runs / name / "log" / "config.yaml") as f:
            assert yaml.safe_load(f)["parallel"][key] == value
        got = step_losses(two_rank_runs / name / "log")
        assert got == pytest.approx(reference, abs=1e-5), name
        assert step_losses(two_rank_runs / name / "resumed_log") == got[2:], name  # exact, float for float


def test_uneven_pipeline_split_matches_one_process(tmp_path, data, two_rank_runs):
    """parallel.pipeline_layers=[1,2] (3 layers on 2 stages) trains to the single-process losses of the same model."""
    single = make_config(tmp_path / "single", data)
    train_in_process(single, "checkpoint.dir=null", "model.num_layers=3")
    with open(two_rank_runs / "pp2_uneven" / "log" / "config.yaml") as f:
        assert yaml.safe_load(f)["parallel"]["pipeline_layers"] == [1, 2]
    got = step_losses(two_rank_runs / "pp2_uneven" / "log")
    assert len(got) == STEPS and got == pytest.approx(step_losses(tmp_path / "single" / "log"), abs=1e-5)


def first_step_per_token_loss(config):
    """The first step's loss computed apart from the trainer's loss path: the set-up model's full logits on the
    first global batch, summed cross entropy over unmasked labels / their number."""
    import torch
    import torch.nn.functional as F

    from megasnow.parallel import state
    from megasnow.train.config import load_train_config
    from megasnow.train.trainer import Trainer

    log_dir = os.path.join(os.path.dirname(config), "first_step_log")  # log.dir holds the run's own metrics
    trainer = Trainer(load_train_config(config, ["checkpoint.dir=null", f"log.dir={log_dir}"])).setup()
    try:
        dataset = trainer.datasets[0][0]
        samples = torch.tensor([list(dataset[i]) for i in range(4)], dtype=torch.int64)
        labels = masked_labels(None, samples, range(4))
        with torch.no_grad():
            logits = trainer.model_chunks[0](samples[:, :-1])
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return float(total) / int((labels != -100).sum())
    finally:
        trainer.metrics.close()
        state.destroy_model_parallel()


def test_per_token_loss_with_uneven_masks_matches_one_process(tmp_path, data, monkeypatch, two_rank_runs):
    """train.calculate_per_token_loss with a loss mask that counts different tokens per sample: one process (2
    micro-batches of 2), data=2 (1 of 2 per rank) and data=2 with micro-batches of 1 give the same steps, and
    the logged loss is the per-token mean of the global batch. Without the option a masked batch is refused."""
    from megasnow.train.data import MicroBatches

    monkeypatch.setattr(MicroBatches, "labels", masked_labels)
    one = make_config(tmp_path / "one", data)
    with pytest.raises(ConfigError, match=r"a loss mask needs the per-token loss, set "
                                          r"train\.calculate_per_token_loss=true"):
        train_in_process(one, "checkpoint.dir=null")
    train_in_process(one, *PER_TOKEN)
    reference = step_losses(tmp_path / "one" / "log")
    assert reference[0] == pytest.approx(first_step_per_token_loss(one), abs=1e-5)
    for name in PER_TOKEN_LAYOUTS:
        assert step_losses(two_rank_runs / name / "log") == pytest.approx(reference, abs=1e-5), name


def resume_copy(tmp_path, saved, step=2):
    """A copy of a saved run's checkpoint folder whose `latest` names `step`."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(saved / "ckpt", ckpt)
    (ckpt / "latest").write_text(f"step_{step:08d}\n")
    return ckpt


def test_resume_on_another_data_parallel_size(tmp_path, data, two_rank_runs):
    """A checkpoint saved by data=2 resumes on one process (same global batch, as Megatron does): the data continues
    at the saved consumed_samples, so steps 3 and 4 give the losses of the data=2 run (and of one process from the
    start). The distributed optimizer's state is sharded over the data-parallel ranks: refused, saying so."""
    from megasnow.train.checkpoint import CheckpointError

    config = make_config(tmp_path, data)
    resume_copy(tmp_path, two_rank_runs / "dp2_saved")
    state = train_in_process(config)
    assert state.step == STEPS and state.consumed_samples == STEPS * 4
    saved = step_losses(two_rank_runs / "dp2_saved" / "log")
    assert step_losses(tmp_path / "log") == pytest.approx(saved[2:], abs=1e-5)
    notes = [r["message"] for r in losses(str(tmp_path / "log"), kind="note")]
    assert any("resumed on 1 data-parallel rank(s), saved on 2: the same global batch of 4, so the data continues "
               "at sample 8 of the phase" in n for n in notes), notes

    zero = tmp_path / "zero"
    resume_copy(zero, two_rank_runs / "zero1")
    with pytest.raises(CheckpointError, match=r"saved with 2 data-parallel ranks, this run has 1: the distributed "
                                              r"optimizer .* cannot be resharded; resume with 2 data-parallel ranks"):
        train_in_process(make_config(zero, data), *RESUMED_LAYOUTS["zero1"])
