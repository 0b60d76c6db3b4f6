"""Shared helpers of the stage functions: a task's config, the paths of a prepared shard and its metadata."""
import json
import os

import numpy as np

from megasnow.config import from_dict
from megasnow.curate.config import CurateConfig

_CFG_CACHE = {}
# What the running task is reading (set by the readers, per file or record), so that a failing task can name it.
READING = {"path": None, "position": None}


def reading(path, position=None):
    READING["path"], READING["position"] = path, position


def describe_reading():
    """' while reading FILE (record N)' for the file the current task last reached, or ''."""
    if READING["path"] is None:
        return ""
    where = f" while reading {READING['path']}"
    return where + (f" ({READING['position']})" if READING["position"] is not None else "")


def config_of(task):
    """The CurateConfig of a task (which carries it as a dict), parsed once per worker process."""
    key = json.dumps(task["cfg"], sort_keys=True)
    if key not in _CFG_CACHE:
        _CFG_CACHE[key] = from_dict(CurateConfig, task["cfg"])
    return _CFG_CACHE[key]


def prepare_paths(work, shard):
    base = os.path.join(work, "prepared", shard)
    return {"records": base + ".jsonl", "meta": base + ".meta.npz", "decon": base + ".decon.jsonl"}


def iter_prepared_lines(work, shard):
    """The raw JSON lines of one prepared shard (callers parse only the lines they need)."""
    path = prepare_paths(work, shard)["records"]
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            reading(path, f"line {i}")
            yield line


def load_meta(work, shard_names, key):
    """One metadata column (hash, stars, ...) of the given prepared shards, concatenated in shard order."""
    return np.concatenate([np.load(prepare_paths(work, s)["meta"])[key] for s in shard_names]) \
        if shard_names else np.zeros(0)
