"""One run per folder: an advisory lock (fcntl.flock) on checkpoint.dir and log.dir held by rank 0 for the run's
life, and the run identity recorded in log.dir so that another run's metrics are never appended to."""
import fcntl
import json
import os
import socket
import time

from megasnow.config import ConfigError
from megasnow.train.config import ALIKE
from megasnow.data.output_check import top_missing_folder

LOCK = ".megasnow.lock"
RUN_FILE = "run.json"  # in log.dir: {"checkpoint_dir": realpath or null}


class RunDirLock:
    """Exclusive flock on `<folder>/.megasnow.lock` for each folder. The kernel drops the lock when the process
    ends in any way (SIGKILL included), so a killed run never blocks its own resume. Raises ConfigError naming
    the key and the holder (pid, host) when another process holds one."""

    def __init__(self, folders):
        self._held = []  # (fd, path, created_folder)
        try:
            for key, folder in folders:
                self._lock(key, folder)
        except BaseException:
            self.release(remove_created=True)
            raise

    def _lock(self, key, folder):
        # The top-most folder this makes (folder itself or a parent): a failed start removes up to it, empty.
        created = top_missing_folder(folder)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if created:
                    _remove_empty(folder, created)
                raise ConfigError(f"{key} {folder} is in use by another run ({holder}); wait for it to end, stop "
                                  f"it, or give this run another {key}") from None
            # The file may have been unlinked by a releasing run between open and flock: lock the one on disk.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._held.append((fd, path, created))

    def release(self, remove_created=False):
        """Drop every lock. `remove_created`: a failed start also removes the folders it created (when they hold
        nothing but the lock file), so it leaves nothing behind."""
        for fd, path, created in reversed(self._held):
            if remove_created and created:
                try:
                    os.unlink(path)
                except OSError:
                    pass
                _remove_empty(os.path.dirname(path), created)
            os.close(fd)
        self._held = []

    def __del__(self):  # a Trainer dropped without close() (tests, notebooks) must not keep its folders locked
        self.release()


def _read_holder(fd):
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']}, host {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "pid and host unknown"


def _remove_empty(folder, top):
    """Remove `folder` and its parents up to `top` (the top-most one this run made) while they are empty."""
    folder, top = os.path.abspath(folder), os.path.abspath(top)
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == top or not folder.startswith(top + os.sep):
            return
        folder = os.path.dirname(folder)


def lock_folders(cfg):
    """[(key, folder)] to lock for a run: checkpoint.dir, and log.dir unless it lies inside checkpoint.dir."""
    out = []
    ckpt = cfg.checkpoint.dir
    if ckpt:
        out.append(("checkpoint.dir", ckpt))
    log = cfg.log.dir
    if not ckpt or not _inside(log, ckpt):
        out.append(("log.dir", log))
    return out


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def on_rank0(rank, fn):
    """fn() on rank 0, its result (or the ConfigError it raised) given to every rank, so every rank returns the same
    value or raises the same error (none waits in a collective for a rank that left)."""
    import torch.distributed as dist

    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except ConfigError as e:
            error = str(e)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [error, None if isinstance(result, RunDirLock) else result]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
        if rank != 0:
            result = box[1]
    if error:
        e = ConfigError(error)
        setattr(e, ALIKE, True)  # every rank raises rank 0's error: under torchrun only rank 0 prints it
        raise e
    return result


def acquire(cfg, rank):
    """Take the run's locks on rank 0 (None on other ranks); every rank raises when another run holds one."""
    return on_rank0(rank, lambda: RunDirLock(lock_folders(cfg)))


def run_identity(cfg):
    """What makes two runs the same run: the real path of checkpoint.dir (None without checkpoints)."""
    return os.path.realpath(cfg.checkpoint.dir) if cfg.checkpoint.dir else None


def check_log_dir(cfg, resuming):
    """Decide what to do with metrics already in log.dir: None (nothing there), "resume" (trim them to the
    checkpoint's step), "restart" (this run's own, trimmed to nothing) or "replace" (no step's record in them).

    The metrics may be continued only by the run that wrote them (same checkpoint.dir, recorded in run.json):
    resumed, they are trimmed to the checkpoint's step; restarted from step 0 (its checkpoints deleted or
    checkpoint.resume=false), they are trimmed to nothing. Metrics of another run, of a run without checkpoints, or
    of unknown origin are refused (ConfigError) unless this run resumes a checkpoint; a file without any step's
    record (a start that failed) is replaced."""
    log = cfg.log.dir
    metrics = os.path.join(log, "metrics.jsonl")
    if not os.path.exists(metrics) or os.path.getsize(metrics) == 0:
        return None
    if not _has_trained(metrics):  # a start that failed before its first step: nothing to keep apart
        return "replace"
    here = run_identity(cfg)
    recorded = read_identity(log)
    fix = f"give this run a new log.dir, or delete {log} to replace them"
    if recorded is not None:
        theirs = recorded.get("checkpoint_dir")
        if theirs != here:
            what = f"checkpoint.dir {theirs}" if theirs else "no checkpoint.dir"
            raise ConfigError(f"log.dir {log} holds the metrics of another run ({what}; this run's checkpoint.dir "
                              f"is {cfg.checkpoint.dir}); {fix}")
        if here is None:
            raise ConfigError(f"log.dir {log} holds the metrics of an earlier run without checkpoint.dir, which "
                              f"cannot be resumed; {fix}")
        return "resume" if resuming else "restart"
    if resuming:
        return "resume"  # written before run.json existed: the checkpoint's run adopts it
    raise ConfigError(f"log.dir {log} holds the metrics of another run (metrics.jsonl of unknown origin) and this "
                      f"run starts at step 0; {fix}")


def _has_trained(metrics):
    """Whether a metrics.jsonl holds a step's record (read up to the first one)."""
    with open(metrics, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if json.loads(line).get("kind", "train") == "train":
                    return True
            except (ValueError, AttributeError):
                continue
    return False


def read_identity(log_dir):
    try:
        with open(os.path.join(log_dir, RUN_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_identity(cfg):
    from megasnow.utils.atomic import atomic_write_text

    os.makedirs(cfg.log.dir, exist_ok=True)
    atomic_write_text(os.path.join(cfg.log.dir, RUN_FILE),
                      json.dumps({"checkpoint_dir": run_identity(cfg)}, indent=1) + "\n")
