"""Ctrl-C at the points where evaluation creates something: the sandbox's temporary folder and workers are removed,
and the report's four files are all new or all old."""
import gc
import json
import os
import signal

import pytest

from megasnow.eval import report, sandbox
from megasnow.eval.sandbox import ExecutionPool


def leftovers(tmp):
    return sorted(p for p in os.listdir(tmp) if p.startswith("megasnow-eval-"))


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_interrupt_right_after_the_folder_is_made_leaves_nothing(tmp_root, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox.os, "chmod", interrupted)  # the first step after the mkdir
    with pytest.raises(KeyboardInterrupt):
        ExecutionPool(workers=1)
    gc.collect()
    assert leftovers(tmp_root) == []


def test_a_pool_never_entered_or_closed_removes_its_folder(tmp_root):
    """An interrupt between the constructor and `with`/try: the folder goes with the pool object (or at exit)."""
    pool = ExecutionPool(workers=1)
    assert leftovers(tmp_root) == [os.path.basename(pool.tmp_root)]
    del pool
    gc.collect()
    assert leftovers(tmp_root) == []


def test_interrupt_while_a_worker_starts_kills_it(tmp_root, monkeypatch):
    def interrupted(self, deadline):
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox._Worker, "read_line", interrupted)  # waiting for the worker's hello
    pool = ExecutionPool(workers=1)
    with pytest.raises(KeyboardInterrupt):
        with pool:
            pool._take_worker()
    assert pool._started == [] and leftovers(tmp_root) == []
    # the worker process was killed and reaped, not left running in its own session
    import subprocess

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert sandbox.WORKER_SCRIPT not in ps or all(
        "<defunct>" in line for line in ps.splitlines() if sandbox.WORKER_SCRIPT in line)


def old_report(out):
    summary = {"benchmark": "b", "tasks": 1, "pass_at_k": {"base": {"pass@1": 0.0}}}
    return report.write_report(str(out), [{"task_id": "old"}], summary, {"old": True})


NEW = ([{"task_id": "new"}], {"benchmark": "b", "tasks": 2, "pass_at_k": {"base": {"pass@1": 1.0}}}, {"new": True})


def contents(out):
    return {name: open(os.path.join(out, name)).read() for name in sorted(os.listdir(out))}


def test_report_interrupted_while_written_keeps_the_previous_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    old_report(out)
    before = contents(out)
    calls = []
    real = report.atomic_write_text

    def write_then_interrupt(path, text):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(report, "atomic_write_text", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(str(out), *NEW)
    assert contents(out) == before  # no temporary file left either


def test_ctrl_c_during_the_renames_is_delivered_after_all_four(tmp_path, monkeypatch):
    out = tmp_path / "out"
    old_report(out)
    real = os.replace
    renamed = []

    def replace_with_ctrl_c(src, dst):
        if os.path.basename(dst).startswith("."):  # writing a temporary file
            return real(src, dst)
        if not renamed:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C during the first of the final renames
        real(src, dst)
        renamed.append(dst)

    monkeypatch.setattr(report.os, "replace", replace_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(str(out), *NEW)
    assert len(renamed) == 4
    after = contents(out)
    assert sorted(after) == ["config.json", "results.jsonl", "summary.json", "summary.md"]
    assert json.loads(after["summary.json"])["tasks"] == 2 and json.loads(after["config.json"]) == {"new": True}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_while_the_pool_closes_still_removes_everything(tmp_root, monkeypatch):
    """`timeout -s INT` signals the process and then its group: a second SIGINT can land in close()'s wait."""
    pool = ExecutionPool(workers=1)
    worker = pool._take_worker()
    real_wait = type(worker.proc).wait

    def wait_interrupted(self, timeout=None):
        if timeout is not None:  # the graceful wait, not kill()'s reaping
            raise KeyboardInterrupt
        return real_wait(self, timeout)

    monkeypatch.setattr(type(worker.proc), "wait", wait_interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.close()
    assert worker.proc.returncode is not None and leftovers(tmp_root) == []


def test_ctrl_c_after_the_last_line_is_ignored():
    """evaluate.py's work_done: once main returned, a Ctrl-C during the interpreter's teardown is not an exit 130."""
    import subprocess
    import sys

    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools",
                        "evaluate.py")
    code = ("import importlib.util, signal, sys; spec = importlib.util.spec_from_file_location('t', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); rc = m.work_done(0); "
            "signal.raise_signal(signal.SIGINT); print('finished'); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, tool], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "finished\n", "")
