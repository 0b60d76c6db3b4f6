"""Bad conditions: NaN/Inf steps skipped and counted, K in a row stop with a checkpoint of the last good state,
missing/corrupt data and impossible batch settings refused before the first step."""
import os

import pytest
import torch

from megasnow.config import ConfigError
from megasnow.train import checkpoint as ckpt
from megasnow.train.trainer import TrainingStopped
from tests.train.helpers import (losses, real_code_files, run_train, tiny_config, train_in_process,
                                 write_byte_dataset, write_config)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=20))


def config(tmp_path, prefix, steps=6, **sections):
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": steps}], **sections)
    return write_config(tmp_path / "run.yaml", cfg)


def model_state(step_dir):
    return torch.load(os.path.join(step_dir, "model_tp00_pp000.pt"), weights_only=True)[0]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_step_is_skipped_and_counted(tmp_path, prefix):
    cfg = config(tmp_path, prefix, steps=4, train={"debug_nan_steps": [3], "max_consecutive_nan": 2},
                 checkpoint={"interval": 1, "keep_last": 0})
    state = train_in_process(cfg)
    assert (state.step, state.nan_skips, state.consecutive_nan) == (4, 1, 0)
    recs = losses(str(tmp_path / "log"))
    assert [r["skipped"] for r in recs] == [False, False, True, False]
    assert recs[2]["loss"] != recs[2]["loss"]  # NaN is logged as such
    steps = dict(ckpt.list_checkpoints(str(tmp_path / "ckpt")))
    # the poisoned step changed nothing; the steps around it did
    assert same_weights(model_state(steps[2]), model_state(steps[3]))
    assert not same_weights(model_state(steps[3]), model_state(steps[4]))
    assert ckpt.read_meta(steps[4])["trainer"]["nan_skips"] == 1


def test_k_nan_steps_in_a_row_stop_with_last_good_checkpoint(tmp_path, prefix, capsys):
    cfg = config(tmp_path, prefix, steps=10, train={"debug_nan_steps": [3, 4, 5], "max_consecutive_nan": 3},
                 checkpoint={"interval": 2, "keep_last": 0})
    with pytest.raises(TrainingStopped, match=r"3 steps in a row.*steps 3\.\.5"):
        train_in_process(cfg)
    steps = dict(ckpt.list_checkpoints(str(tmp_path / "ckpt")))
    assert sorted(steps) == [2, 4, 5]
    meta = ckpt.read_meta(steps[5])
    assert meta["reason"] == "nan_abort" and meta["trainer"]["nan_skips"] == 3
    assert same_weights(model_state(steps[2]), model_state(steps[5]))
    assert "the last good weights are saved in" in capsys.readouterr().out


def test_nan_stop_exit_code_from_the_command_line(tmp_path, prefix):
    cfg = config(tmp_path, prefix, steps=5, train={"debug_nan_steps": [1, 2], "max_consecutive_nan": 2})
    res = run_train(cfg)
    assert res.returncode == 3
    assert "2 steps in a row had a non-finite loss" in res.stderr


def test_missing_data_fails_before_the_first_step(tmp_path, prefix):
    cfg = tiny_config(tmp_path, [{"name": "a", "blend": [{"path": prefix}], "steps": 2},
                                 {"name": "b", "blend": [{"path": str(tmp_path / "nope")}], "steps": 2}])
    path = write_config(tmp_path / "run.yaml", cfg)
    with pytest.raises(ConfigError, match=r"phases\[1\]\.blend\[0\]\.path: .*nope\.bin does not exist"):
        train_in_process(path)
    assert not os.path.exists(tmp_path / "log" / "metrics.jsonl")


def test_corrupt_data_fails_before_the_first_step(tmp_path, prefix):
    bad = tmp_path / "bad"
    with open(prefix + ".idx", "rb") as f:
        (tmp_path / "bad.idx").write_bytes(f.read())
    with open(prefix + ".bin", "rb") as f:
        (tmp_path / "bad.bin").write_bytes(f.read()[:100])  # truncated
    cfg = tiny_config(tmp_path, [{"name": "a", "blend": [{"path": str(bad)}], "steps": 2}])
    with pytest.raises(ConfigError, match=r"phases\[0\]\.blend\[0\]\.path: .*bad\.bin"):
        train_in_process(write_config(tmp_path / "run.yaml", cfg))


def test_impossible_batch_fails_before_the_first_step(tmp_path, prefix):
    res = run_train(config(tmp_path, prefix), "train.global_batch_size=6", "train.micro_batch_size=4")
    assert res.returncode == 2
    assert "train.global_batch_size (6) must be a multiple of train.micro_batch_size (4)" in res.stderr
    too_long = config(tmp_path, prefix, data={"seq_len": 128})
    with pytest.raises(ConfigError, match=r"data\.seq_len \(128\) exceeds model\.max_seq_len \(64\)"):
        train_in_process(too_long)


def test_shape_mismatch_on_resume_names_the_tensor(tmp_path, prefix):
    cfg = config(tmp_path, prefix, steps=2)
    train_in_process(cfg)
    # refused by the config comparison first, naming the key; forced, the checkpoint names the tensor
    with pytest.raises(ConfigError, match=r"model\.ffn_hidden_size None -> 128 would break exact resume"):
        train_in_process(cfg, "model.ffn_hidden_size=128", "phases.0.steps=4")
    with pytest.raises(ckpt.CheckpointError, match=r"shape mismatch for tensor 'layers\.0\.mlp\.gate_up_proj\.weight'"):
        train_in_process(cfg, "model.ffn_hidden_size=128", "phases.0.steps=4", "checkpoint.allow_config_change=true")


def test_skipped_step_does_not_advance_the_schedule_and_resumes_exactly(tmp_path, prefix):
    """Megatron's rule: the LR schedule moves only after a successful update. Step 3 is skipped (NaN), so step 4
    trains at the LR step 3 would have had; resuming from the checkpoints before and after the skip replays the
    same LRs and losses."""
    from megasnow.train.config import load_train_config, resolve_phases
    from megasnow.train.schedules import lr_at

    warmup = {"style": "linear", "max_lr": 3e-3, "min_lr": 0.0, "warmup_steps": 3}
    cfg = config(tmp_path, prefix, steps=6, schedule=warmup, train={"debug_nan_steps": [3]},
                 checkpoint={"interval": 2, "keep_last": 0})
    state = train_in_process(cfg)
    assert (state.nan_skips, state.scheduler_steps) == (1, 5)
    recs = losses(str(tmp_path / "log"))
    schedule = resolve_phases(load_train_config(cfg))[0].schedule
    assert [r["lr"] for r in recs] == [lr_at(k, schedule, 6) for k in (0, 1, 2, 2, 3, 4)]
    assert ckpt.read_meta(os.path.join(tmp_path, "ckpt", "step_00000004"))["trainer"]["scheduler_steps"] == 3
    for resume_at in (2, 4):  # before and after the skipped step
        with open(tmp_path / "ckpt" / "latest", "w") as f:
            f.write(f"step_{resume_at:08d}\n")
        log = tmp_path / f"resumed_{resume_at}"
        train_in_process(cfg, f"log.dir={log}")
        fields = [(r["step"], r["lr"], r["skipped"], str(r["loss"])) for r in losses(str(log))]  # str: NaN == NaN
        assert fields == [(r["step"], r["lr"], r["skipped"], str(r["loss"])) for r in recs[resume_at:]]


def test_checkpoint_without_scheduler_steps_resumes_at_its_step_in_phase():
    """Checkpoints written before scheduler_steps existed advanced the schedule on every step."""
    from megasnow.train.trainer import _trainer_state

    old = {"step": 7, "phase": 1, "step_in_phase": 3, "consumed_samples": 12, "nan_skips": 1}
    assert _trainer_state(old).scheduler_steps == 3
    assert _trainer_state(dict(old, scheduler_steps=2, unknown_key=1)).scheduler_steps == 2
