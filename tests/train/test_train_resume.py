"""Exact resume: SIGKILL at arbitrary steps (and SIGTERM) then resume gives bit-identical per-step losses."""
import os
import signal
import subprocess

import pytest

from megasnow.train import checkpoint as ckpt
from megasnow.train import trainer as trainer_mod
from tests.train.helpers import (REPO, losses, real_code_files, run_train, tiny_config, train_command, train_env,
                                 train_in_process, write_byte_dataset, write_config)

PHASES_STEPS = (6, 6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    a = write_byte_dataset(str(d / "general"), real_code_files(limit=30))
    b = write_byte_dataset(str(d / "quality"), real_code_files(limit=15, skip=30))
    return a, b


def make_config(tmp_path, data, name):
    a, b = data
    phases = [
        {"name": "general", "blend": [{"path": a, "weight": 2.0}, {"path": b, "weight": 1.0}],
         "steps": PHASES_STEPS[0],
         "schedule": {"style": "cosine", "max_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2}},
        {"name": "quality", "blend": [{"path": b, "repeat": 2}], "steps": PHASES_STEPS[1],
         "schedule": {"style": "linear", "max_lr": 3e-3, "min_lr": 0.0, "warmup_steps": 2}},
    ]
    run = tmp_path / name
    cfg = tiny_config(run, phases, checkpoint={"interval": 2, "keep_last": 2})
    return write_config(tmp_path / f"{name}.yaml", cfg), run


def start_and_signal(config, after_step, sig):
    """Start a run, wait for the progress line of `after_step`, send `sig`; returns (returncode, output)."""
    proc = subprocess.Popen(train_command(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=train_env(), cwd=REPO)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(f"step {after_step:>6d} |"):
                os.kill(proc.pid, sig)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen) + (rest or "")


def step_losses(run_dir):
    recs = losses(str(run_dir / "log"))
    return [r["step"] for r in recs], [r["loss"] for r in recs]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """Per-step losses of the uninterrupted run."""
    ref_cfg, ref_run = make_config(tmp_path_factory.mktemp("ref"), data, "reference")
    train_in_process(ref_cfg)
    steps, values = step_losses(ref_run)
    assert steps == list(range(1, sum(PHASES_STEPS) + 1))
    assert values[-1] < values[0] - 0.5  # it learns
    return steps, values


def test_sigkill_resume_is_bit_identical(tmp_path, data, reference):
    ref_steps, ref_losses = reference

    cfg, run = make_config(tmp_path, data, "killed")
    # killed mid-phase 1 (resumes from step 4 and goes on through the phase change with its optimizer reset)
    code, out = start_and_signal(cfg, 5, signal.SIGKILL)
    assert code == -signal.SIGKILL, out
    res = run_train(cfg)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout
    steps, got = step_losses(run)
    assert steps == ref_steps
    assert got == ref_losses  # exact float equality, step by step
    # keep-last-2 and the pointer
    names = sorted(n for n in os.listdir(run / "ckpt") if n != ".megasnow.lock")  # the run lock stays
    assert names == ["latest", "step_00000010", "step_00000012"]
    assert ckpt.read_meta(ckpt.resolve_latest(str(run / "ckpt")))["trainer"]["finished_phases"] == \
        ["general", "quality"]


def test_sigterm_saves_and_exits_cleanly(tmp_path, data, reference, monkeypatch, capsys):
    cfg, run = make_config(tmp_path, data, "preempted")
    real_step = trainer_mod.Trainer._train_step

    def step_then_preempt(self, *args):
        real_step(self, *args)
        if self.state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what Slurm sends before preempting a job

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", step_then_preempt)
    state = train_in_process(cfg)
    assert state.step == 3
    assert "SIGTERM: saved a checkpoint at step 3" in capsys.readouterr().out
    meta = ckpt.read_meta(ckpt.resolve_latest(str(run / "ckpt")))
    assert meta["reason"] == "sigterm" and meta["step"] == 3
    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", real_step)
    assert train_in_process(cfg).step == sum(PHASES_STEPS)
    assert step_losses(run) == reference
