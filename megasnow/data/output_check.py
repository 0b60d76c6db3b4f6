"""Refuse an output prefix or folder that cannot be written (a file where a folder is needed, a folder where a file
goes) before any work starts, with one line naming the flag."""
import contextlib
import os

from megasnow.errors import UserError
from megasnow.utils.cli import removed_on_failure


class OutputPathError(UserError, ValueError):
    """An output flag's path cannot hold the outputs; the message names the flag and what to change."""


def nearest_existing_parent(path):
    """The nearest existing path above `path` (absolute; `/` at worst): what the tool's first makedirs would meet,
    so a file there means `path` can never be created."""
    probe = os.path.dirname(os.path.abspath(os.fspath(path)))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return probe


def check_output_prefix(prefix, outputs=(), flag="--output-prefix"):
    """Raise OutputPathError when `prefix`'s folder (or one above it) is an existing file, when one of `outputs`
    (the files the tool will write) is an existing folder, or when the folder cannot be created or written.

    Creates nothing: the folder is made later by the atomic writers (megasnow.utils.atomic).
    """
    prefix = os.fspath(prefix)
    if not prefix or prefix.endswith(os.sep):
        raise OutputPathError(f"{flag} {prefix!r} names a folder, not a prefix: give e.g. {prefix or './'}data")
    probe = nearest_existing_parent(prefix)
    if not os.path.isdir(probe):
        raise OutputPathError(f"{flag} {prefix}: {probe} is a file, not a folder; give a prefix under a folder "
                              f"(or move {probe} away)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {prefix}: cannot write in {probe} (permission denied); give a prefix under "
                              f"a folder you can write")
    for path in outputs:
        if os.path.isdir(path):
            raise OutputPathError(f"{flag} {prefix}: {path} is a folder, but the output file goes there; give "
                                  f"another prefix (or move the folder away)")


def check_output_folder(path, flag="--output"):
    """Raise OutputPathError when the output folder `path` is an existing file, when a folder above it is a file,
    or when the nearest existing folder cannot be written. Creates nothing (the tool makes the folder when it
    starts writing; an OSError from that is its to name, e.g. a path under /proc that no check can foresee)."""
    path = os.fspath(path)
    if not path:
        raise OutputPathError(f"{flag} is empty: give a folder for the outputs")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputPathError(f"{flag} {path} is an existing file; give a folder for the outputs (new or existing)")
    probe = nearest_existing_parent(path)
    if not os.path.isdir(probe):
        raise OutputPathError(f"{flag} {path}: {probe} is a file, not a folder; give a path whose folders are "
                              f"folders")
    if not os.access(path if os.path.isdir(path) else probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: cannot write in {path if os.path.isdir(path) else probe} (permission "
                              f"denied); give a folder you can write")


def top_missing_folder(path):
    """The top-most missing folder on the way to `path` (`path` itself, or a folder above it), absolute; None when
    `path` exists: what a failed run that made `path` must remove to leave nothing behind."""
    path, top = os.path.abspath(os.fspath(path)), None
    while not os.path.lexists(path):
        top, path = path, os.path.dirname(path)
    return top


@contextlib.contextmanager
def folders_removed_on_failure(prefix):
    """Around the work that writes under `prefix`: if it fails (an error, Ctrl-C), the folders it created for the
    prefix (the top-most one missing now, with everything under it) are removed again, so nothing is left."""
    top = top_missing_folder(os.path.dirname(os.path.abspath(os.fspath(prefix))))
    if top is None:
        yield
        return
    with removed_on_failure(top):
        yield
