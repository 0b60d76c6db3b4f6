"""Sandboxed execution for evaluation: a pool of worker processes that run untrusted programs in confined children.

The harness never executes a program itself: each job goes to a `sandbox_worker.py` process (started with
`python -I`), which forks one confined child per job and kills the child's process group at the job's wall deadline.
See docs/evaluation.md ("Safety model") for what the confinement does and does not stop.
"""
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass

from megasnow.errors import UserError
from megasnow.eval.signals import signals_held

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_worker.py")
STATUSES = ("passed", "failed", "timeout", "error")


class SandboxError(UserError, RuntimeError):
    """The sandbox cannot run here (its worker does not start); the message says why."""


def total_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of every sandboxed child.

    memory_bytes: RLIMIT_AS (EvalPlus's default: 4 GiB or the machine's memory if less); file_size_bytes:
    RLIMIT_FSIZE, the largest file it may write; processes: RLIMIT_NPROC (0: it cannot fork or start threads).
    """

    memory_bytes: int = 4 << 30
    file_size_bytes: int = 16 << 20
    processes: int = 0

    def __post_init__(self):
        if self.memory_bytes < 64 << 20:
            raise ValueError(f"memory_bytes must be at least 64 MiB, got {self.memory_bytes}")
        if self.file_size_bytes < 0 or self.processes < 0:
            raise ValueError("file_size_bytes and processes must be >= 0")


def default_limits():
    return SandboxLimits(memory_bytes=min(4 << 30, total_memory_bytes()))


@dataclass
class Job:
    """One program run. kind 'program': `code` runs whole (its asserts decide); kind 'inputs': `code` defines
    `entry_point`, called on the inputs of `test_set` in the task data file `data` and compared with the expected
    outputs there. mode 'check' scores a sample, 'truth' runs a canonical solution (outputs and seconds).
    time_limits: seconds per test (one for a program); wall_seconds: the deadline for the whole child."""

    id: str
    kind: str
    code: str
    time_limits: list
    wall_seconds: float
    mode: str = "check"
    entry_point: str = ""
    data: str = ""
    test_set: str = ""
    dataset: str = ""
    fast_check: bool = True
    output_not_none: bool = False
    max_result_bytes: int = 1 << 20


class _Worker:
    """One sandbox_worker.py process (own session) and the pipes to it."""

    def __init__(self, started):
        """Start the worker and append it to `started` (its pool's list, which close() kills) as soon as it exists,
        so that a Ctrl-C while it starts up leaves no process behind."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")}
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-u", WORKER_SCRIPT], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, start_new_session=True, env=env, close_fds=True)
        except OSError as e:
            raise SandboxError(f"cannot start the sandbox worker {WORKER_SCRIPT}: {e}") from None
        started.append(self)
        self._buf = b""
        try:
            line = self.read_line(time.monotonic() + 60)
        except BaseException:
            self.kill()
            raise
        if line is None or "hello" not in line:
            self.kill()
            started.remove(self)
            raise SandboxError(f"the sandbox worker {WORKER_SCRIPT} did not start (no hello within 60 s)")
        self.hello = line["hello"]

    def send(self, job_dict):
        self.proc.stdin.write((json.dumps(job_dict) + "\n").encode())
        self.proc.stdin.flush()

    def read_line(self, deadline):
        """The next JSON line from the worker, or None if it died or passed the deadline."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class ExecutionPool:
    """Runs Jobs on `workers` sandbox worker processes (default: one per available core).

    `run_chains(chains)` takes lists of jobs; the jobs of one chain run in order on one worker and the chain stops
    at its first job that does not pass (a sample's plus tests run only once its base tests passed). Yields
    (chain index, [result dict per job run]) as chains finish. A result has status (passed/failed/timeout/error),
    exception and message where known, wall and cpu seconds, and mode-specific fields. Use as a context manager.
    """

    def __init__(self, workers=None, limits=None):
        self.workers = max(1, int(workers or available_cpus()))
        self.limits = limits or default_limits()
        self._started, self._idle = [], []
        # The folder's name is chosen, and its removal registered (on close, on garbage collection, at exit), before
        # it exists: a Ctrl-C at any point after the mkdir, even before the caller's `with` or try/finally is
        # entered, cannot leave it behind (tempfile.mkdtemp would return the name only after creating it).
        self.tmp_root = os.path.join(tempfile.gettempdir(), f"megasnow-eval-{uuid.uuid4().hex[:12]}")
        self._remove_tmp = weakref.finalize(self, shutil.rmtree, self.tmp_root, ignore_errors=True)
        os.mkdir(self.tmp_root, 0o700)
        os.chmod(self.tmp_root, 0o711)  # children drop to `nobody` and must reach their own folder inside
        self._lock = threading.Lock()
        self._closed = False
        self.isolation = None

    def _start_worker(self):
        if self._closed:
            raise SandboxError("the execution pool was closed while jobs were running")
        w = _Worker(self._started)
        if self.isolation is None:
            self.isolation = describe_isolation(w.hello)
        return w

    def _take_worker(self):
        """An idle worker from an earlier run_chains call, else a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._start_worker()

    def _job_dict(self, job):
        d = asdict(job)
        d["limits"] = asdict(self.limits)
        d["cpu_seconds"] = int(job.wall_seconds) + 2
        d["tmp_root"] = self.tmp_root
        return d

    def run_chains(self, chains):
        todo = queue.Queue()
        for i, chain in enumerate(chains):
            todo.put((i, chain))
        done = queue.Queue()
        n_threads = min(self.workers, len(chains))
        if n_threads == 0:
            return
        first = self._take_worker()  # fail fast, in this thread, if the worker cannot start
        threads = [threading.Thread(target=self._serve, args=(todo, done, first if t == 0 else None), daemon=True)
                   for t in range(n_threads)]
        for t in threads:
            t.start()
        finished = 0
        try:
            while finished < len(chains):
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                finished += 1
                yield item
        finally:
            for _ in threads:
                todo.put(None)
            for t in threads:
                t.join(timeout=0.1)

    def _serve(self, todo, done, worker):
        try:
            worker = worker or self._take_worker()
            while True:
                item = todo.get()
                if item is None or self._closed:
                    with self._lock:
                        self._idle.append(worker)
                    return
                index, chain = item
                results = []
                for job in chain:
                    result, worker = self._run_one(worker, job)
                    results.append(result)
                    if result["status"] != "passed":
                        break
                done.put((index, results))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread, which raises it
            done.put(e)

    def _run_one(self, worker, job):
        """(result, the worker to use next). A worker that died or stopped answering is killed and replaced (the job
        is reported as an error); after close() it is not replaced."""
        try:
            worker.send(self._job_dict(job))
            # The worker answers by the job's wall deadline; allow generous slack for a loaded machine.
            result = worker.read_line(time.monotonic() + job.wall_seconds + 30)
        except OSError:
            result = None
        if result is not None:
            return result, worker
        worker.kill()
        with self._lock:
            if worker in self._started:
                self._started.remove(worker)
        lost = {"status": "error", "exception": "SandboxWorkerLost", "wall": 0.0, "cpu": 0.0,
                "message": "the sandbox worker died or stopped answering; it was replaced"}
        if self._closed:
            raise SandboxError("the execution pool was closed while jobs were running")
        return lost, self._start_worker()

    def close(self):
        """Stop the workers (each finishes its job, up to 2 s, then is killed) and remove the temporary folder. A
        second Ctrl-C (a terminal or `timeout` may send two) cuts the graceful wait short but not the kill and the
        removal, which run with signals held back (they cannot hang: SIGKILL, then rmtree)."""
        self._closed = True
        try:
            for w in list(self._started):
                try:
                    w.proc.stdin.close()
                except OSError:
                    pass
            deadline = time.monotonic() + 2
            for w in list(self._started):
                try:
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            with signals_held():
                for w in list(self._started):
                    w.kill()
                self._started, self._idle = [], []
                self._remove_tmp()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def describe_isolation(hello):
    """What confinement this machine gives (recorded in every summary)."""
    abi = hello.get("landlock_abi", 0)
    return {"network": hello.get("network_note", ""), "network_namespace": bool(hello.get("network_namespace")),
            "landlock_abi": abi,
            "filesystem_writes": "only the child's temporary folder (Landlock)" if abi >= 1 else
            "not confined by the kernel (no Landlock): only the reliability guard and file permissions",
            "user": hello.get("uid")}
