"""One run per folder: a live run's checkpoint.dir/log.dir lock refuses a second run (every rank, no hang) and
frees itself when the holder is SIGKILLed; log.dir metrics are continued only by the run that wrote them."""
import os
import signal
import subprocess
import sys

import pytest

from megasnow.config import ConfigError
from megasnow.parallel.spawn import run_processes
from megasnow.train.run_dir import RunDirLock
from tests.train.helpers import (REPO, losses, real_code_files, run_train, tiny_config, train_env, train_in_process,
                                 write_byte_dataset, write_config)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=12))


def make_config(tmp_path, prefix, steps=2, **sections):
    phases = [{"name": "only", "blend": [{"path": prefix}], "steps": steps}]
    return write_config(tmp_path / "run.yaml", tiny_config(tmp_path, phases, **sections))


def hold_lock(folder):
    """Another process holding `folder`'s run lock, as a live trainer would; returns it once the lock is taken."""
    code = ("import sys, time; from megasnow.train.run_dir import RunDirLock; "
            "lock = RunDirLock([('checkpoint.dir', sys.argv[1])]); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=train_env(), cwd=REPO)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_live_checkpoint_dir_is_refused_before_touching_it(tmp_path, data):
    config = make_config(tmp_path, data)
    ckpt = tmp_path / "ckpt"
    holder = hold_lock(ckpt)
    try:
        r = run_train(config)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"error: checkpoint.dir {ckpt} is in use by another run (pid {holder.pid}, host ")
        assert sorted(os.listdir(ckpt)) == [".megasnow.lock"]  # nothing loaded or written
        assert not (tmp_path / "log").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run's lock goes with it
        holder.wait()
    r = run_train(config)
    assert r.returncode == 0, r.stderr
    assert [rec["step"] for rec in losses(str(tmp_path / "log"))] == [1, 2]


def test_log_dir_outside_checkpoint_dir_is_locked_too(tmp_path, data):
    config = make_config(tmp_path, data)
    with pytest.raises(ConfigError, match=r"log\.dir .*log is in use by another run \(pid"):
        lock = RunDirLock([("log.dir", str(tmp_path / "log"))])
        try:
            train_in_process(config)
        finally:
            lock.release()
    assert not (tmp_path / "ckpt").exists()  # a failed start removes the folder it created


def _refused_on_every_rank(rank, world, config):
    try:
        train_in_process(config)
    except ConfigError as e:
        return str(e)
    return None


def test_lock_refusal_reaches_every_rank(tmp_path, data):
    config = make_config(tmp_path, data)
    holder = hold_lock(tmp_path / "ckpt")
    try:
        out = run_processes(_refused_on_every_rank, 2, (config,), timeout_s=120)
    finally:
        holder.kill()
        holder.wait()
    assert out[0] == out[1] and "is in use by another run (pid" in out[0]


def test_log_dir_is_continued_only_by_its_own_run(tmp_path, data):
    config = make_config(tmp_path, data)
    log = tmp_path / "log"
    train_in_process(config)
    before = (log / "metrics.jsonl").read_text()

    # another run (another checkpoint.dir) on the same log.dir: refused, nothing appended
    with pytest.raises(ConfigError, match=r"log\.dir .* holds the metrics of another run \(checkpoint\.dir "):
        train_in_process(config, f"checkpoint.dir={tmp_path / 'other'}")
    assert (log / "metrics.jsonl").read_text() == before
    # a run without checkpoints cannot continue them either
    with pytest.raises(ConfigError, match=r"new log\.dir"):
        train_in_process(config, "checkpoint.dir=null")

    # the same run resumed with a longer phase appends
    train_in_process(config, "phases.0.steps=3")
    assert [r["step"] for r in losses(str(log))] == [1, 2, 3]

    # the same run restarted from nothing (its checkpoints deleted) replaces its metrics instead of interleaving
    import shutil

    shutil.rmtree(tmp_path / "ckpt")
    train_in_process(config)
    assert [r["step"] for r in losses(str(log))] == [1, 2]


def test_metrics_of_unknown_origin_are_not_appended_to(tmp_path, data):
    config = make_config(tmp_path, data)
    os.makedirs(tmp_path / "log")
    (tmp_path / "log" / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 5.0}\n')
    with pytest.raises(ConfigError, match=r"unknown origin\) and this run starts at step 0"):
        train_in_process(config)


def test_metrics_of_a_start_that_failed_are_replaced(tmp_path, data):
    """A first attempt that stopped before its first step (no train record) does not block the fixed rerun."""
    config = make_config(tmp_path, data, checkpoint={"dir": None})
    os.makedirs(tmp_path / "log")
    (tmp_path / "log" / "metrics.jsonl").write_text('{"kind": "phase", "step": 0, "message": "phase 1/1"}\n')
    train_in_process(config)
    assert [r["step"] for r in losses(str(tmp_path / "log"))] == [1, 2]
    assert [r["kind"] for r in losses(str(tmp_path / "log"), kind="phase")] == ["phase"]  # the old one replaced
