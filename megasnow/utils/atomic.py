"""Atomic file outputs: write under a temporary name in the same folder, fsync, then rename.

A crash therefore never leaves a half-written file under its final name.
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
    os.close(fd)
    return tmp
