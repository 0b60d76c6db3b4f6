"""GPTDataset: fixed-length training samples packed across documents of one indexed dataset.

Megatron semantics (sample i = stream[i*seq_len : i*seq_len + seq_len + 1] of the shuffled documents) with
per-epoch document shuffles, per-epoch sample shuffles, a document-level train/valid split and cached indices.
"""
import os

import numpy as np

from megasnow.errors import UserError
from megasnow.data.index_cache import IndexCache, dataset_fingerprint, load_array
from megasnow.data.indexed import IndexedDataset

SPLITS = ("train", "valid")
# The train/valid partition depends only on the dataset and valid_fraction, never on the training seed,
# so runs with different seeds share one validation set.
SPLIT_SEED = 0x5EED_5B17
INDEX_NAMES = ("document_index", "sample_index", "shuffle_index")


class GPTDatasetError(UserError, ValueError):
    """Bad parameters or a dataset too small for them; the message names the dataset and the values."""


def _helpers():
    try:
        from megasnow import _dataset_helpers  # C++ (csrc/dataset_helpers.cpp); imported on first use
    except ImportError as e:
        raise ImportError("megasnow._dataset_helpers (csrc/dataset_helpers.cpp) is not built: run `pip install -e .` "
                          "or `python setup.py build_ext --inplace` in the repository") from e
    return _dataset_helpers


def default_cache_dir(prefix):
    """Megatron's habit: a `cache/` folder beside the data files."""
    return os.path.join(os.path.dirname(os.path.abspath(prefix)), "cache", "megasnow_indices")


def split_documents(num_documents, valid_fraction, split):
    """Sorted document ids of `split`: a fixed pseudo-random round(valid_fraction * n) documents are `valid`.

    The partition is a seeded permutation, so valid documents come from the whole dataset (a merged
    per-language dataset does not lose its last language to validation), and growing valid_fraction only
    adds documents to the valid set.
    """
    if valid_fraction == 0.0:
        return np.arange(num_documents if split == "train" else 0, dtype=np.int64)
    order = _helpers().permutation(num_documents, SPLIT_SEED)
    num_valid = int(round(valid_fraction * num_documents))
    chosen = order[:num_valid] if split == "valid" else order[num_valid:]
    return np.sort(chosen)


def split_documents_and_tokens(indexed, valid_fraction, split):
    """(sorted document ids of the split, their total tokens) for an open IndexedDataset."""
    bounds = np.asarray(indexed.document_indices, dtype=np.int64)
    documents = split_documents(len(bounds) - 1, valid_fraction, split)
    if len(documents) == 0:
        raise GPTDatasetError(f"{indexed.path_prefix}: split {split!r} has no documents "
                              f"({len(bounds) - 1} documents, valid_fraction={valid_fraction})")
    cumulative = np.concatenate([[0], np.cumsum(indexed.sequence_lengths, dtype=np.int64)])
    tokens_per_document = cumulative[bounds[1:]] - cumulative[bounds[:-1]]
    return documents, int(tokens_per_document[documents].sum())


MAX_DOCUMENT_INDEX = 2**31 - 1  # entries of the document index (epochs x documents), as in Megatron's int32 array


def num_epochs_for(num_samples, tokens_per_epoch, seq_len):
    """Fewest epochs E whose token stream holds num_samples samples: (E * T - 1) // seq_len >= num_samples."""
    return -(-(num_samples * seq_len + 1) // tokens_per_epoch)


def samples_in_epochs(num_epochs, tokens_per_epoch, seq_len):
    return (num_epochs * tokens_per_epoch - 1) // seq_len


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GPTDatasetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class GPTDataset:
    """`ds[i]` -> np.int64 array of seq_len + 1 tokens (inputs x[:-1], labels x[1:]); len(ds) == num_samples.

    Give exactly one of `num_samples` (as many epochs as needed, the last one partly used) and `num_epochs`
    (exactly that many passes over the split: the size is then (num_epochs * tokens - 1) // seq_len).
    """

    def __init__(self, prefix, seq_len, seed, num_samples=None, num_epochs=None, split="train",
                 valid_fraction=0.0, cache_dir=None, indexed=None):
        self.prefix = os.fspath(prefix)
        self.seq_len = _check_int("seq_len", seq_len, 1)
        self.seed = _check_int("seed", seed, 0)
        if split not in SPLITS:
            raise GPTDatasetError(f"split must be one of {SPLITS}, got {split!r}")
        if not (isinstance(valid_fraction, (int, float)) and 0.0 <= valid_fraction < 1.0):
            raise GPTDatasetError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
        if split == "valid" and valid_fraction == 0.0:
            raise GPTDatasetError(f"{self.prefix}: split='valid' needs valid_fraction > 0")
        if (num_samples is None) == (num_epochs is None):
            raise GPTDatasetError("give exactly one of num_samples and num_epochs")
        self.split, self.valid_fraction = split, float(valid_fraction)
        self.indexed = indexed if indexed is not None else IndexedDataset(self.prefix)

        bounds = np.asarray(self.indexed.document_indices, dtype=np.int64)
        lengths = np.asarray(self.indexed.sequence_lengths)
        self.documents, self.tokens_per_epoch = split_documents_and_tokens(self.indexed, self.valid_fraction, split)
        if self.tokens_per_epoch == 0:
            raise GPTDatasetError(f"{self.prefix}: split {split!r} has no tokens")
        if num_epochs is not None:
            self.num_epochs = _check_int("num_epochs", num_epochs, 1)
            self.num_samples = samples_in_epochs(self.num_epochs, self.tokens_per_epoch, self.seq_len)
            if self.num_samples < 1:
                raise GPTDatasetError(f"{self.prefix}: split {split!r} has {self.tokens_per_epoch} tokens, fewer than "
                                      f"one sample of seq_len + 1 = {self.seq_len + 1} in {self.num_epochs} "
                                      f"epoch(s); give it more data, more repeats, or a shorter seq_length")
        else:
            # As Megatron-core's GPTDataset._get_num_epochs: as many epochs as the samples need, even when the split
            # is shorter than one sample (a small synthetic set in a blend); samples then span epochs.
            self.num_samples = _check_int("num_samples", num_samples, 1)
            self.num_epochs = num_epochs_for(self.num_samples, self.tokens_per_epoch, self.seq_len)
            if self.num_epochs * len(self.documents) > MAX_DOCUMENT_INDEX:  # the int32 document index
                raise GPTDatasetError(f"{self.prefix}: split {split!r} has {self.tokens_per_epoch} tokens, so "
                                      f"{self.num_samples} samples of seq_len {self.seq_len} would read it "
                                      f"{self.num_epochs} times; give it more data or a smaller weight")

        self.description = {
            "dataset": dataset_fingerprint(self.prefix), "seq_len": self.seq_len, "seed": self.seed,
            "num_samples": self.num_samples, "num_epochs": self.num_epochs, "split": split,
            "valid_fraction": self.valid_fraction, "split_seed": SPLIT_SEED,
        }
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir(self.prefix)
        cache = IndexCache(self.cache_dir)
        arrays, self.index_paths, self.built_indices = cache.load_or_build(
            "gpt", self.description, INDEX_NAMES, lambda: self._build_indices(bounds, lengths))
        self._set_indices(arrays)

    def _build_indices(self, bounds, lengths):
        h = _helpers()
        document_index = h.build_document_index(bounds, self.documents, self.num_epochs, self.seed)
        sample_index = h.build_sample_index(lengths, document_index, self.seq_len)
        total = len(sample_index) - 1
        # Sample j starts at stream token j * seq_len; it belongs to the epoch holding that token.
        epoch_starts = -(-np.arange(self.num_epochs, dtype=np.int64) * self.tokens_per_epoch // self.seq_len)
        group_bounds = np.append(np.minimum(epoch_starts, total), total)
        shuffle_index = h.build_shuffle_index(group_bounds, self.num_samples, self.seed)
        return {"document_index": document_index, "sample_index": sample_index, "shuffle_index": shuffle_index}

    def _set_indices(self, arrays):
        self.document_index = arrays["document_index"]
        self.sample_index = arrays["sample_index"]
        self.shuffle_index = arrays["shuffle_index"]
        if len(self.shuffle_index) != self.num_samples:
            raise GPTDatasetError(f"cached shuffle index has {len(self.shuffle_index)} entries, expected "
                                  f"{self.num_samples}: {self.index_paths['shuffle_index']}")

    def __len__(self):
        return self.num_samples

    def __getitem__(self, i):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"sample index must be an int, not {type(i).__name__}")
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range for {self.num_samples} samples")
        j = int(self.shuffle_index[i])
        (pos, offset), (last_pos, last_offset) = self.sample_index[j], self.sample_index[j + 1]
        out = np.empty(self.seq_len + 1, dtype=np.int64)
        doc_index, ds = self.document_index, self.indexed
        if pos == last_pos:
            out[:] = ds.get(int(doc_index[pos]), int(offset), int(last_offset - offset + 1))
            return out
        # The sample crosses documents: the rest of the first, whole middle ones, the head of the last.
        piece = ds.get(int(doc_index[pos]), int(offset))
        filled = len(piece)
        out[:filled] = piece
        for p in range(int(pos) + 1, int(last_pos)):
            piece = ds[int(doc_index[p])]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
        out[filled:] = ds.get(int(doc_index[last_pos]), 0, int(last_offset) + 1)
        return out

    def __getstate__(self):
        # Workers re-map the cached index files instead of receiving copies of the arrays.
        state = dict(self.__dict__)
        for name in INDEX_NAMES:
            del state[name]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._set_indices({name: load_array(path) for name, path in self.index_paths.items()})

    def __repr__(self):
        return (f"GPTDataset({self.prefix!r}, split={self.split!r}, samples={self.num_samples}, "
                f"seq_len={self.seq_len}, epochs={self.num_epochs}, tokens_per_epoch={self.tokens_per_epoch})")
