"""Atomic file outputs: write under a temporary name in the same folder, fsync, then rename.

A crash therefore never leaves a half-written file under its final name. Files get the mode a plain `open()` would
give them (0666 less the process umask), not mkstemp's private 0600, so data on shared clusters stays readable.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """Open a temporary file beside `path`; on clean exit fsync and rename it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path, data):
    with atomic_write(path, "wb") as f:
        f.write(data)


def temporary_path(path):
    """A fresh temporary name beside `path` for writers that need a path rather than a file object.

    Pair with `os.replace(tmp, path)` once the writer has finished.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return tmp


def temporary_dir(path):
    """A fresh temporary folder beside `path` with the mode os.makedirs would give it (0777 less the umask), for
    writers that build a folder and then rename it into place (tempfile.mkdtemp alone makes it 0700).

    Call `honour_umask_tree(tmp)` before the rename: some writers (safetensors) create private 0600 files.
    """
    path = os.fspath(path).rstrip(os.sep)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    make_private_dir_public(tmp)
    return tmp


def honour_umask_tree(root):
    """Give every file and folder under `root` (itself included) the mode a plain open()/os.makedirs would:
    0666 (0777 for folders and executables) less the process umask. Writers such as safetensors make 0600 files
    whatever the umask; call this on a temporary_dir before renaming it into place."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def make_private_dir_public(path):
    """Give a folder made by tempfile.mkdtemp (0700) the mode os.makedirs would (0777 less the umask)."""
    os.chmod(path, 0o777 & ~current_umask())


def current_umask():
    """The process umask, read without changing it where /proc allows (os.umask's set-and-restore is racy)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
