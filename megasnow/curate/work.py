"""Shared helpers of the stage functions: a task's config, the paths of a prepared shard and its metadata."""
import json
import os

import numpy as np

from megasnow.config import from_dict
from megasnow.curate.config import CurateConfig

_CFG_CACHE = {}


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
    with open(prepare_paths(work, shard)["records"], "rb") as f:
        yield from f


def load_meta(work, shard_names, key):
    """One metadata column (hash, stars, ...) of the given prepared shards, concatenated in shard order."""
    return np.concatenate([np.load(prepare_paths(work, s)["meta"])[key] for s in shard_names]) \
        if shard_names else np.zeros(0)
