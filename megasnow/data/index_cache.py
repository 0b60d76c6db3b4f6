"""On-disk cache of dataset index arrays (.npy), keyed by a hash of everything that determines them.

Built once (rank 0 under torch.distributed, else whoever takes the lock file first), written atomically,
then memory-mapped read-only by every rank and DataLoader worker.
"""
import fcntl
import hashlib
import json
import os
import sys

import numpy as np

from megasnow.utils.atomic import atomic_write, atomic_write_text

CACHE_FORMAT_VERSION = 1


class IndexCacheError(RuntimeError):
    """The cache folder cannot be used (not writable, or files inconsistent with their manifest)."""


def dataset_fingerprint(prefix):
    """What identifies an indexed dataset's contents cheaply: its real path, and size + mtime of both files."""
    out = {"prefix": os.path.realpath(prefix)}
    for ext in ("idx", "bin"):
        st = os.stat(f"{prefix}.{ext}")
        out[f"{ext}_size"] = st.st_size
        out[f"{ext}_mtime_ns"] = st.st_mtime_ns
    return out


def description_hash(description):
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _distributed_rank():
    """This process's rank when torch.distributed is initialized, else None (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank()


class IndexCache:
    """A folder of `<kind>-<hash>-<name>.npy` arrays, each set committed by its `<kind>-<hash>.json` manifest."""

    def __init__(self, cache_dir):
        self.cache_dir = os.fspath(cache_dir)

    def paths(self, kind, description, names):
        key = description_hash(description)
        base = os.path.join(self.cache_dir, f"{kind}-{key}")
        return f"{base}.json", {name: f"{base}-{name}.npy" for name in names}

    def _is_complete(self, manifest_path, array_paths, description):
        if not os.path.isfile(manifest_path) or not all(map(os.path.isfile, array_paths.values())):
            return False
        with open(manifest_path) as f:
            stored = json.load(f)
        if stored.get("description") != json.loads(json.dumps(description)):
            raise IndexCacheError(f"{manifest_path}: manifest describes different parameters (hash collision or "
                                  f"a hand-edited file); delete it to rebuild")
        return True

    def _build_locked(self, manifest_path, array_paths, description, build):
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            lock = open(manifest_path + ".lock", "a")
        except OSError as e:
            raise IndexCacheError(f"index cache folder {self.cache_dir} is not writable ({e}); "
                                  f"pass cache_dir= a writable folder") from e
        with lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            if self._is_complete(manifest_path, array_paths, description):
                return False
            arrays = build()
            if set(arrays) != set(array_paths):
                raise ValueError(f"index builder returned {sorted(arrays)}, expected {sorted(array_paths)}")
            for name, path in array_paths.items():
                with atomic_write(path, "wb") as f:
                    np.save(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            # The manifest goes last: its presence means every array beside it is complete.
            manifest = {"format_version": CACHE_FORMAT_VERSION, "description": description,
                        "arrays": {n: {"file": os.path.basename(p), "shape": list(np.shape(arrays[n])),
                                       "dtype": str(np.asarray(arrays[n]).dtype)} for n, p in array_paths.items()}}
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            return True

    def load_or_build(self, kind, description, names, build):
        """Return ({name: read-only memory-mapped array}, {name: file path}, built_here: bool).

        `build()` returns {name: array}; it runs at most once per cache folder for a given description.
        Under torch.distributed every rank must call this (rank 0 builds, the others wait at a barrier);
        a rank that then still misses the files (a node-local cache folder) builds its own copy under the lock.
        """
        description = dict(description, cache_format_version=CACHE_FORMAT_VERSION, kind=kind)
        manifest_path, array_paths = self.paths(kind, description, names)
        rank = _distributed_rank()
        built = False
        if rank is None:
            built = self._build_locked(manifest_path, array_paths, description, build)
        else:
            import torch.distributed as dist

            error = None
            if rank == 0:
                try:
                    built = self._build_locked(manifest_path, array_paths, description, build)
                except Exception as e:  # reach the barrier anyway, so other ranks fail fast instead of hanging
                    error = e
            dist.barrier()
            if error is not None:
                raise error
            if rank != 0:
                built = self._build_locked(manifest_path, array_paths, description, build)
        return {name: load_array(path) for name, path in array_paths.items()}, array_paths, built


def load_array(path):
    """Memory-map a cached .npy read-only."""
    return np.load(path, mmap_mode="r", allow_pickle=False)
