"""Blends of GPT datasets: weighted (Megatron's largest-deficit order) or by explicit repetition.

`build_gpt_dataset(blend, ...)` is the one call the trainer makes; see docs/datasets.md for the semantics.
"""
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from megasnow.data.gpt_dataset import (GPTDataset, GPTDatasetError, _helpers, default_cache_dir,
                                       split_documents_and_tokens)
from megasnow.data.index_cache import IndexCache, load_array
from megasnow.data.indexed import IndexedDataset

BLEND_INDEX_NAMES = ("dataset_index", "dataset_sample_index")


@dataclass(frozen=True)
class BlendEntry:
    """One dataset of a blend: a share of the samples by `weight`, or exactly `repeat` passes over it."""

    prefix: str
    weight: float = 1.0
    repeat: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.prefix, (str, os.PathLike)) or not os.fspath(self.prefix):
            raise GPTDatasetError(f"blend entry prefix must be a non-empty path, got {self.prefix!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise GPTDatasetError(f"blend entry {self.prefix}: weight must be a finite number > 0, got {w!r}")
        r = self.repeat
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
                raise GPTDatasetError(f"blend entry {self.prefix}: repeat must be an integer >= 1, got {r!r}")
            if w != 1.0:
                raise GPTDatasetError(f"blend entry {self.prefix}: sets both weight={w} and repeat={r}; a repeated "
                                      f"entry's share is fixed by its size, so drop the weight")


def as_blend_entry(entry):
    """Accept a BlendEntry, a mapping {prefix, weight?, repeat?} (YAML configs) or a bare prefix string."""
    if isinstance(entry, BlendEntry):
        return entry
    if isinstance(entry, (str, os.PathLike)):
        return BlendEntry(os.fspath(entry))
    if isinstance(entry, dict):
        unknown = set(entry) - {"prefix", "weight", "repeat"}
        if unknown or "prefix" not in entry:
            raise GPTDatasetError(f"blend entry {entry!r}: expected keys prefix, weight, repeat "
                                  f"(unknown: {sorted(unknown)})")
        return BlendEntry(**entry)
    raise GPTDatasetError(f"blend entry must be a BlendEntry, dict or prefix string, got {type(entry).__name__}")


class BlendedDataset:
    """Sample i is sample `dataset_sample_index[i]` of dataset `dataset_index[i]`.

    Weighted (`weights`, `size`): Megatron's largest-deficit order, so after any n samples dataset d has
    given within one sample of weights[d] * n. Exhaustive (`weights=None`): every dataset gives all of its
    samples, interleaved by the same rule with weights proportional to the sizes.
    """

    def __init__(self, datasets, weights, size, cache_dir, description):
        self.datasets = list(datasets)
        if weights is None:
            sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
            build = lambda: dict(zip(BLEND_INDEX_NAMES, _helpers().build_exhaustive_blending_indices(sizes)))
            self.weights = sizes / sizes.sum()
            size = int(sizes.sum())
        else:
            self.weights = np.asarray(weights, dtype=np.float64)
            build = lambda: dict(zip(BLEND_INDEX_NAMES, _helpers().build_blending_indices(self.weights, size)))
        self.size = size
        self.description = description
        arrays, self.index_paths, self.built_indices = IndexCache(cache_dir).load_or_build(
            "blend", description, BLEND_INDEX_NAMES, build)
        self._set_indices(arrays)

    def _set_indices(self, arrays):
        self.dataset_index = arrays["dataset_index"]
        self.dataset_sample_index = arrays["dataset_sample_index"]

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"sample index must be an int, not {type(i).__name__}")
        if not 0 <= i < self.size:
            raise IndexError(f"sample {i} out of range for {self.size} samples")
        return self.datasets[self.dataset_index[i]][int(self.dataset_sample_index[i])]

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in BLEND_INDEX_NAMES:
            del state[name]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._set_indices({name: load_array(path) for name, path in self.index_paths.items()})

    def __repr__(self):
        parts = ", ".join(f"{d.prefix}: {w:.4f}" for d, w in zip(self.datasets, self.weights) if d is not None)
        return f"BlendedDataset(samples={self.size}, weights={{{parts}}})"


def build_gpt_dataset(blend, num_samples, seq_len, seed, split="train", valid_fraction=0.0, cache_dir=None):
    """The trainer's entry point: one dataset of packed samples from a blend of indexed datasets.

    - No entry has `repeat`: len == num_samples, entries share the samples by normalized weight.
    - Every entry has `repeat`: entry e contributes exactly repeat_e passes over its split (num_samples is
      ignored and may be None); len == the sum of those sizes. Exception: split="valid" with num_samples
      given draws num_samples held-out samples in the training mix (weights repeat_e x held-out tokens_e).
    - Mixing the two is refused: a weighted share of an unknown total next to fixed sizes has no one meaning.
    A single entry returns its GPTDataset directly.
    """
    if isinstance(blend, (str, os.PathLike, BlendEntry, dict)):
        blend = [blend]
    entries = [as_blend_entry(e) for e in blend]
    if not entries:
        raise GPTDatasetError("blend is empty: give at least one dataset prefix")
    repeated = [e.repeat is not None for e in entries]
    common = dict(seq_len=seq_len, seed=seed, split=split, valid_fraction=valid_fraction)

    def cache_for(entry):
        return cache_dir if cache_dir is not None else default_cache_dir(entry.prefix)

    if all(repeated) and split == "valid" and num_samples is not None:
        # Held-out data of a repeated blend: the training mix (each entry weighted by repeat x its held-out
        # tokens) over num_samples samples, rather than `repeat` passes over a small held-out set.
        shares = []
        for e in entries:
            _, tokens = split_documents_and_tokens(IndexedDataset(e.prefix), valid_fraction, split)
            shares.append(e.repeat * tokens)
        entries = [BlendEntry(e.prefix, weight=float(w)) for e, w in zip(entries, shares)]
        repeated = [False] * len(entries)
    if all(repeated):
        datasets = [GPTDataset(e.prefix, num_epochs=e.repeat, cache_dir=cache_for(e), **common) for e in entries]
        if len(datasets) == 1:
            return datasets[0]
        description = {"mode": "repeat", "parts": [d.description for d in datasets]}
        return BlendedDataset(datasets, None, None, cache_for(entries[0]), description)
    if any(repeated):
        with_repeat = [e.prefix for e in entries if e.repeat is not None]
        raise GPTDatasetError(f"blend mixes repeated entries {with_repeat} with weighted ones; give every entry a "
                              f"repeat count (exact sizes) or none (weights over num_samples)")

    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise GPTDatasetError(f"num_samples must be an integer >= 1 for a weighted blend, got {num_samples!r}")
    if len(entries) == 1:
        return GPTDataset(entries[0].prefix, num_samples=int(num_samples), cache_dir=cache_for(entries[0]), **common)
    weights = np.array([e.weight for e in entries], dtype=np.float64)
    weights /= weights.sum()
    # Size each dataset to exactly what the blend will draw from it (no Megatron-style 0.5% margin needed).
    counts = np.bincount(_helpers().build_blending_indices(weights, int(num_samples))[0], minlength=len(entries))
    datasets = [GPTDataset(e.prefix, num_samples=int(c), cache_dir=cache_for(e), **common) if c > 0 else None
                for e, c in zip(entries, counts)]
    description = {"mode": "weights", "weights": weights.tolist(), "num_samples": int(num_samples),
                   "parts": [d.description if d is not None else e.prefix for d, e in zip(datasets, entries)]}
    return BlendedDataset(datasets, weights, int(num_samples), cache_for(entries[0]), description)
