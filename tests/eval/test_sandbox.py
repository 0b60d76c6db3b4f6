"""Hostile programs are contained by the sandbox and the run ends in bounded time."""
import os
import socket
import sys
import time

import pytest

from megasnow.eval.sandbox import ExecutionPool, Job, SandboxLimits

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

# Re-create the `posix` module from the interpreter's pristine copy: the reliability guard's None-ing is gone, so what
# stops these programs is the kernel (rlimits, Landlock, the network namespace, the uid), not the guard.
BYPASS = ("import _imp, importlib.machinery\n"
          "posix = _imp.create_builtin(importlib.machinery.ModuleSpec('posix', importlib.machinery.BuiltinImporter))\n"
          "assert posix.fork is not None and posix.unlink is not None\n")


def _processes_in(folder):
    """Processes whose working directory is under `folder` (every sandboxed child works in a folder there)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.readlink(f"/proc/{name}/cwd").startswith(folder):
                found.append(int(name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def pool():
    with ExecutionPool(workers=2, limits=SandboxLimits(memory_bytes=1 << 30, file_size_bytes=1 << 20)) as p:
        yield p


def run(pool, programs, limit=1.0):
    jobs = [[Job(id=name, kind="program", code=code, time_limits=[limit], wall_seconds=limit + 1.0)]
            for name, code in programs.items()]
    names = list(programs)
    return {names[i]: res[0] for i, res in pool.run_chains(jobs)}


def test_hostile_programs_are_contained(pool, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / name for name in ("a.txt", "b.txt", "c.txt", "d.txt")}
    for p in victims.values():
        p.write_text("keep me")
    before = {p: (p.read_text(), p.stat().st_mtime_ns) for p in victims.values()}
    marker = tmp_path / "marker"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    a, b, c, d = (str(v) for v in victims.values())
    programs = {
        "infinite_loop": "while True:\n    pass\n",
        "sleep_forever": "import time\ntime.sleep(3600)\n",
        "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
        "fork_bomb_bypass": BYPASS + "while True:\n    posix.fork()\n",
        "threads": "import threading\nfor _ in range(100000):\n    threading.Thread(target=lambda: None).start()\n",
        "allocate_10gb": "x = bytearray(10 * 2**30)\n",
        "huge_file": "with open('big.bin', 'wb') as f:\n    for _ in range(10_000):\n"
                     "        f.write(b'x' * (1 << 20))\n",
        "os_system": f"import os\nos.system('touch {marker}')\n",
        "subprocess": f"import subprocess\nsubprocess.run(['touch', '{marker}'])\n",
        "delete_outside": f"import os, shutil\nos.remove('{a}')\n",
        "delete_outside_bypass": BYPASS + f"posix.unlink('{a}')\n",
        "rmtree_outside": f"import shutil\nshutil.rmtree('{outside}')\n",
        "truncate_outside": f"open('{b}', 'w').write('gone')\n",
        "rename_outside": BYPASS + f"posix.rename('{c}', '{c}.moved')\n",
        "pathlib_outside": f"import pathlib\npathlib.Path('{d}').write_text('gone')\n",
        "socket_localhost": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n",
        "udp_out": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))\n",
        "write_own_tmp": "open('ok.txt', 'w').write('x' * 1000)\nimport os\nassert os.path.getsize('ok.txt') == 1000\n",
        "not_in_harness": f"import os\nassert os.getpid() != {os.getpid()}\n",
    }
    start = time.monotonic()
    results = run(pool, programs)
    elapsed = time.monotonic() - start
    status = {k: r["status"] for k, r in results.items()}

    assert elapsed < 30, f"hostile set took {elapsed:.1f}s"
    assert status["infinite_loop"] == "timeout" and status["sleep_forever"] == "timeout"
    for name in ("fork_bomb", "fork_bomb_bypass", "threads", "allocate_10gb", "huge_file", "os_system",
                 "subprocess", "delete_outside", "delete_outside_bypass", "rmtree_outside", "truncate_outside",
                 "rename_outside", "pathlib_outside", "socket_localhost", "udp_out"):
        assert status[name] == "error", (name, results[name])
    assert results["fork_bomb_bypass"]["exception"] == "BlockingIOError"  # RLIMIT_NPROC, not the guard
    assert results["allocate_10gb"]["exception"] == "MemoryError"
    assert "File too large" in results["huge_file"]["message"]
    assert status["write_own_tmp"] == "passed" and status["not_in_harness"] == "passed"
    # nothing outside was touched, no process was started, nothing connected, nothing is left running
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in victims.values()} == before
    assert sorted(os.listdir(outside)) == sorted(victims)
    assert not marker.exists()
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    assert _processes_in(pool.tmp_root) == []


def test_results_by_status(pool):
    results = run(pool, {"ok": "assert 1 + 1 == 2\n", "wrong": "assert 1 + 1 == 3, 'math'\n",
                         "raises": "raise KeyError('k')\n", "syntax": "def f(:\n",
                         "prints": "import sys\nprint('x' * 100000)\nprint('y' * 100000, file=sys.stderr)\n",
                         "reads_stdin": "input()\n",
                         "numpy": "import numpy as np\nassert np.allclose(np.ones((8, 8)) @ np.ones(8), 8.0)\n",
                         "exits": "import os\nos._exit(3)\n", "segfault": "import sys\nsys.setrecursionlimit(10**8)\n"
                         "def f(n):\n    return f(n + 1)\nf(0)\n"})
    assert results["ok"]["status"] == "passed"
    assert results["prints"]["status"] == "passed"  # output goes to /dev/null, never into the result pipe
    assert results["numpy"]["status"] == "passed"  # solutions may use numpy (it calls putenv at import)
    assert (results["reads_stdin"]["status"], results["reads_stdin"]["exception"]) == ("error", "EOFError")
    assert (results["wrong"]["status"], results["wrong"]["exception"], results["wrong"]["message"]) == \
        ("failed", "AssertionError", "math")
    assert (results["raises"]["status"], results["raises"]["exception"]) == ("error", "KeyError")
    assert (results["syntax"]["status"], results["syntax"]["exception"]) == ("error", "SyntaxError")
    assert results["exits"]["status"] == "error" and "code 3" in results["exits"]["message"]
    assert results["segfault"]["status"] in ("error", "timeout") and results["segfault"]["status"] != "passed"


def test_isolation_is_reported(pool):
    run(pool, {"ok": "pass\n"})
    iso = pool.isolation
    assert set(iso) >= {"network", "network_namespace", "landlock_abi", "filesystem_writes", "user"}
    if os.geteuid() == 0:
        assert iso["user"].startswith("nobody")


def test_a_dead_worker_is_replaced_and_workers_are_reused():
    import signal
    import threading

    with ExecutionPool(workers=1) as pool:
        run(pool, {"warm": "pass\n"})
        run(pool, {"again": "pass\n"})
        assert len(pool._started) == 1  # the second run reused the idle worker
        victim = pool._started[0].proc.pid
        timer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        timer.start()
        results = run(pool, {"sleeper": "import time\ntime.sleep(30)\n", "after": "assert True\n"}, limit=20.0)
        timer.join()
        assert results["sleeper"]["exception"] == "SandboxWorkerLost"
        assert results["after"]["status"] == "passed" and pool._started[0].proc.pid != victim
        assert _processes_in(pool.tmp_root) == []  # the dead worker's child went with it (PR_SET_PDEATHSIG)


HARNESS = """
import threading, time
from megasnow.eval.sandbox import ExecutionPool, Job
with ExecutionPool(workers=1) as pool:
    jobs = [[Job(id="s", kind="program", code="import time\\ntime.sleep(120)\\n", time_limits=[100.0],
                 wall_seconds=110.0)]]
    t = threading.Thread(target=lambda: list(pool.run_chains(jobs)), daemon=True)
    t.start()
    while not pool._started:
        time.sleep(0.01)
    print(pool.tmp_root, pool._started[0].proc.pid, flush=True)
    t.join()
"""


def test_nothing_outlives_a_killed_harness():
    import signal
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    proc = subprocess.Popen([sys.executable, "-c", HARNESS], stdout=subprocess.PIPE, text=True, env=env)
    try:
        tmp_root, worker = proc.stdout.readline().split()
        deadline = time.monotonic() + 30
        while not _processes_in(tmp_root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_in(tmp_root), "the sleeping child never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while (_processes_in(tmp_root) or os.path.exists(f"/proc/{worker}")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(tmp_root) == [] and not os.path.exists(f"/proc/{worker}")
    import shutil

    shutil.rmtree(tmp_root, ignore_errors=True)  # a killed harness cannot remove its own folder
