"""Exact resume: SIGKILL at arbitrary steps (and SIGTERM) then resume gives bit-identical per-step losses."""
import os
import signal
import subprocess

import pytest

from megasnow.train import checkpoint as ckpt
from tests.train.helpers import (REPO, losses, real_code_files, run_train, tiny_config, train_command, train_env,
                                 write_byte_dataset, write_config)

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


def test_sigkill_resume_is_bit_identical(tmp_path, data):
    ref_cfg, ref_run = make_config(tmp_path, data, "reference")
    res = run_train(ref_cfg)
    assert res.returncode == 0, res.stderr
    ref_steps, ref_losses = step_losses(ref_run)
    assert ref_steps == list(range(1, sum(PHASES_STEPS) + 1))

    cfg, run = make_config(tmp_path, data, "killed")
    # killed mid-phase 1 (resumes from step 4), then in phase 2 (resumes from the phase-1 end at step 6 or 8)
    for kill_after in (5, 9):
        code, out = start_and_signal(cfg, kill_after, signal.SIGKILL)
        assert code == -signal.SIGKILL, out
    res = run_train(cfg)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout
    steps, got = step_losses(run)
    assert steps == ref_steps
    assert got == ref_losses  # exact float equality, step by step
    # keep-last-2 and the pointer
    names = sorted(os.listdir(run / "ckpt"))
    assert names == ["latest", "step_00000010", "step_00000012"]
    assert ckpt.read_meta(ckpt.resolve_latest(str(run / "ckpt")))["trainer"]["finished_phases"] == \
        ["general", "quality"]


def test_sigterm_saves_and_exits_cleanly(tmp_path, data):
    ref_cfg, ref_run = make_config(tmp_path, data, "reference")
    assert run_train(ref_cfg).returncode == 0
    cfg, run = make_config(tmp_path, data, "preempted")
    code, out = start_and_signal(cfg, 3, signal.SIGTERM)
    assert code == 0, out
    assert "SIGTERM: saved a checkpoint at step" in out
    meta = ckpt.read_meta(ckpt.resolve_latest(str(run / "ckpt")))
    assert meta["reason"] == "sigterm" and 3 <= meta["step"] < sum(PHASES_STEPS)
    assert run_train(cfg).returncode == 0
    assert step_losses(run) == step_losses(ref_run)
