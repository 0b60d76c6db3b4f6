"""Walking folders of repositories without trusting the file system: every entry is classified (lstat) before it
is opened or named, only regular files are read, and nothing is followed through a symlink.

Odd entries are reported, never fatal: symlinks (to files or folders, inside or outside the tree), FIFOs, sockets,
devices, names that are not valid UTF-8, folders that cannot be listed. Dependency and vendored folders are skipped
by name (`source.exclude_dirs`, fnmatch patterns) so they are not ingested as the repository's own code.
"""
import errno
import fnmatch
import os
import stat

# kinds of entries that are never read (bad_input reasons)
SYMLINK, FIFO, SOCKET, DEVICE, OTHER = "symlink", "fifo", "socket", "device", "special file"
UNENCODABLE = "name not valid UTF-8"


def entry_kind(entry):
    """'file', 'dir' or one of the skipped kinds above for an os.DirEntry, from lstat data (symlinks not followed).

    Raises OSError if the entry vanished since its folder was listed.
    """
    if entry.is_symlink():
        return SYMLINK
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    mode = entry.stat(follow_symlinks=False).st_mode
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISSOCK(mode):
        return SOCKET
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return DEVICE
    return OTHER


def is_encodable(name):
    """True when `name` is valid UTF-8 text (os.fsdecode turns undecodable bytes into lone surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


ALWAYS_EXCLUDED = (".git",)  # never a repository's code, whatever source.exclude_dirs says


def excluded_by(name, patterns):
    """The first fnmatch pattern (case-sensitive) matching a folder name, or None (.git always matches)."""
    for pattern in (*ALWAYS_EXCLUDED, *patterns):
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


def list_entries(folder):
    """(name, kind) of the entries of one folder, sorted by name; OSError if it cannot be listed."""
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            try:
                kind = entry_kind(entry)
            except OSError as e:
                kind = f"unreadable ({type(e).__name__})"
            out.append((entry.name, kind))
    out.sort()
    return out


def walk_repository(repo_dir, exclude_dirs, on_skip=None, on_excluded=None):
    """Relative paths ('/'-separated, sorted) of the regular files under `repo_dir`.

    Skipped entries call on_skip(kind, rel_path): symlinks, FIFOs, sockets, devices, entries that vanished,
    folders that cannot be listed, folders whose name is not valid UTF-8 (their files could not be named). Folders
    matching `exclude_dirs` call on_excluded(pattern, rel_path). File names are returned as they are, encodable or
    not: the reader counts those it cannot name. Symlinks are never followed, so the walk never leaves the tree.
    """
    on_skip = on_skip or (lambda kind, rel: None)
    on_excluded = on_excluded or (lambda pattern, rel: None)
    files, stack = [], [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list_entries(os.path.join(repo_dir, rel_dir) if rel_dir else repo_dir)
        except OSError as e:
            on_skip(f"unreadable folder ({type(e).__name__})", rel_dir or ".")
            continue
        for name, kind in entries:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if kind == "file":
                files.append(rel)
            elif kind == "dir":
                pattern = excluded_by(name, exclude_dirs)
                if pattern is not None:
                    on_excluded(pattern, rel)
                elif not is_encodable(name):
                    on_skip(UNENCODABLE, rel)
                else:
                    stack.append(rel)
            else:
                on_skip(kind, rel)
    return sorted(files)


def read_regular_file(path, max_bytes):
    """(size, bytes or None) of a regular file, opened without following a symlink and without blocking.

    The entry was classified as a regular file when its folder was listed; O_NOFOLLOW | O_NONBLOCK and the fstat
    check make sure that an entry swapped since then for a symlink, FIFO or device is still never read (OSError).
    Files over max_bytes are not read (bytes None).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_size > max_bytes:
            return st.st_size, None
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, max(1 << 16, st.st_size - size + 1))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return size, b"".join(chunks)
    finally:
        os.close(fd)
