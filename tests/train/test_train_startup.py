"""Start-up refusals that name the key to change (evaluation without held-out data, document masking without an
EOD id), SIGTERM without a checkpoint folder, and a NaN-stopped run that resumes with a fresh NaN budget."""
import os
import signal

import pytest

from megasnow.config import ConfigError
from megasnow.train import checkpoint as ckpt
from megasnow.train import trainer as trainer_mod
from megasnow.train.trainer import TrainingStopped
from tests.train.helpers import losses, real_code_files, tiny_config, train_in_process, write_byte_dataset, write_config


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=20))


@pytest.fixture(scope="module")
def small_prefix(tmp_path_factory):
    """Two short files: 3 samples of 33 tokens, less than one global batch of 4."""
    return write_byte_dataset(str(tmp_path_factory.mktemp("small") / "code"), real_code_files(limit=2),
                              max_bytes_per_file=50)


def config(tmp_path, prefix, steps=4, **sections):
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": steps}], **sections)
    return write_config(tmp_path / "run.yaml", cfg)


def test_eval_without_held_out_data_is_refused(tmp_path, prefix, small_prefix):
    with pytest.raises(ConfigError, match=r"train\.eval_interval is 2 but phases\[0\] \(only\) has no held-out data.*"
                                          r"data\.valid_fraction > 0, data\.valid_blend"):
        train_in_process(config(tmp_path, prefix, train={"eval_interval": 2}))
    small = {"valid_blend": [{"path": small_prefix, "repeat": 1}]}
    with pytest.raises(ConfigError, match=r"has 3 held-out samples, less than one global batch \(4\)"):
        train_in_process(config(tmp_path, prefix, train={"eval_interval": 2}, data=small))
    assert not os.path.exists(tmp_path / "log" / "metrics.jsonl")  # nothing ran
    # with held-out documents it evaluates
    train_in_process(config(tmp_path, prefix, train={"eval_interval": 2}, data={"valid_fraction": 0.2}))
    assert [r["step"] for r in losses(str(tmp_path / "log"), kind="eval")] == [2, 4]
    assert not [r for r in losses(str(tmp_path / "log"), kind="note") if "eval_iters" in r["message"]]
    # 2 global batches (8 samples) from 3 held-out samples: one note that batches are reused
    train_in_process(config(tmp_path / "reused", prefix, train={"eval_interval": 2},
                            data={"valid_blend": [{"path": small_prefix}]}))
    notes = [r["message"] for r in losses(str(tmp_path / "reused" / "log"), kind="note")
             if "eval_iters" in r["message"]]
    assert notes == ["train.eval_iters is 2 global batches (8 samples) but phases[0] (only)'s held-out data holds "
                     "about 3 distinct samples: each evaluation reuses held-out batches (train.eval_iters=1 or fewer "
                     "reads each sample once)"]


def test_document_mask_needs_an_eod_id(tmp_path, prefix):
    with pytest.raises(ConfigError, match=r"model\.document_mask needs the end-of-document token id: binarize "
                                          r"with --append-eod, or set data\.tokenizer .* or data\.eod_id"):
        train_in_process(config(tmp_path, prefix, model={"document_mask": True}))


def test_sigterm_without_checkpoint_dir_says_nothing_was_saved(tmp_path, prefix, monkeypatch, capsys):
    real_step = trainer_mod.Trainer._train_step

    def step_then_preempt(self, *args):
        real_step(self, *args)
        if self.state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", step_then_preempt)
    assert train_in_process(config(tmp_path, prefix, checkpoint={"dir": None})).step == 2
    out = capsys.readouterr().out
    assert "SIGTERM: no checkpoint.dir, nothing saved (stopped at step 2); exiting" in out
    assert "saved a checkpoint" not in out


def test_resume_after_nan_stop_gets_a_fresh_budget(tmp_path, prefix):
    cfg = config(tmp_path, prefix, steps=8, train={"debug_nan_steps": [3, 4], "max_consecutive_nan": 2},
                 checkpoint={"interval": 0, "keep_last": 0})
    with pytest.raises(TrainingStopped, match=r"2 steps in a row"):
        train_in_process(cfg)
    meta = ckpt.read_meta(ckpt.resolve_latest(str(tmp_path / "ckpt")))
    assert meta["reason"] == "nan_abort" and meta["trainer"]["consecutive_nan"] == 2
    # One more bad step after the resume is skipped, not a third in a row: the run goes on to the end.
    state = train_in_process(cfg, "train.debug_nan_steps=[5]")
    assert (state.step, state.nan_skips, state.consecutive_nan) == (8, 3, 0)
    recs = losses(str(tmp_path / "log"))
    assert [r["step"] for r in recs] == list(range(1, 9))
    assert [r["skipped"] for r in recs] == [False, False, True, True, True, False, False, False]
