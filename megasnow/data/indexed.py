"""Megatron MMIDIDX v1 indexed token datasets (PREFIX.bin + PREFIX.idx): validating reader and atomic builder.

Byte-compatible with megatron.core.datasets.indexed_dataset in both directions; see docs/data.md for the layout.
"""
import array
import os
import shutil
import struct

import numpy as np

from megasnow.errors import UserError
from megasnow.utils.atomic import temporary_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# The fixed part of the .idx: magic, u64 version, u8 dtype code, u64 sequence count, u64 document-index count.
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8

DTYPE_CODES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(t): c for c, t in DTYPE_CODES.items()}


class IndexedDatasetError(UserError, ValueError):
    """A missing, truncated, corrupt or mismatched .bin/.idx pair; the message names the file and the problem."""


def data_file_path(prefix):
    return os.fspath(prefix) + ".bin"


def index_file_path(prefix):
    return os.fspath(prefix) + ".idx"


def best_dtype(vocab_size):
    """uint16 for vocabularies under 65,500 tokens (Megatron's rule), else int32."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def exists(prefix):
    return os.path.exists(data_file_path(prefix)) and os.path.exists(index_file_path(prefix))


def dtype_code(dtype):
    dt = np.dtype(dtype)
    if dt not in CODE_OF_DTYPE:
        raise IndexedDatasetError(f"dtype {dt} cannot be stored in MMIDIDX (allowed: {sorted(map(str, CODE_OF_DTYPE))})")
    return CODE_OF_DTYPE[dt]


def encode_index(dtype, sequence_lengths, document_indices):
    """The exact bytes of an .idx file for these lengths and document indices (pointers are derived)."""
    lengths = np.asarray(sequence_lengths, dtype=np.int32)
    docs = np.asarray(document_indices, dtype=np.int64)
    pointers = sequence_pointers(lengths, np.dtype(dtype).itemsize)
    header = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", dtype_code(dtype))
    header += struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(docs))
    return header + lengths.tobytes() + pointers.tobytes() + docs.tobytes()


def sequence_pointers(lengths, itemsize):
    """Byte offset of each sequence in .bin: exclusive prefix sum of lengths * itemsize (int64)."""
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(np.asarray(lengths[:-1], dtype=np.int64) * itemsize, out=pointers[1:])
    return pointers


class _Index:
    """The parsed and validated .idx file: memory-mapped lengths, pointers and document indices."""

    def __init__(self, idx_path, bin_path):
        self.path = idx_path
        if not os.path.exists(idx_path):
            raise IndexedDatasetError(f"{idx_path}: index file does not exist")
        size = os.path.getsize(idx_path)
        if size < HEADER_SIZE:
            raise IndexedDatasetError(f"{idx_path}: truncated index: {size} bytes, the header alone needs {HEADER_SIZE}")
        with open(idx_path, "rb") as f:
            head = f.read(HEADER_SIZE)
        if head[: len(MAGIC)] != MAGIC:
            raise IndexedDatasetError(f"{idx_path}: bad magic {head[:len(MAGIC)]!r}, expected {MAGIC!r} (not an MMIDIDX index)")
        pos = len(MAGIC)
        (version,) = struct.unpack_from("<Q", head, pos)
        if version != VERSION:
            raise IndexedDatasetError(f"{idx_path}: unsupported MMIDIDX version {version}, expected {VERSION}")
        (code,) = struct.unpack_from("<B", head, pos + 8)
        if code not in DTYPE_CODES:
            raise IndexedDatasetError(f"{idx_path}: unknown dtype code {code} (known: 1-8)")
        self.code = code
        self.dtype = np.dtype(DTYPE_CODES[code])
        n, d = struct.unpack_from("<QQ", head, pos + 9)
        expected = HEADER_SIZE + 4 * n + 8 * n + 8 * d
        if size not in (expected, expected + n):  # + n: Megatron's multimodal variant appends int8 modes
            raise IndexedDatasetError(
                f"{idx_path}: size {size} bytes does not match its header ({n} sequences, {d} document indices "
                f"need {expected} bytes){' (truncated)' if size < expected else ''}"
            )
        if d < 1:
            raise IndexedDatasetError(f"{idx_path}: document index count is 0; it must be at least 1 (a leading 0)")
        buf = np.memmap(idx_path, mode="r", dtype=np.uint8) if size else np.empty(0, np.uint8)
        self._buf = buf
        self.sequence_lengths = np.frombuffer(buf, dtype=np.int32, count=n, offset=HEADER_SIZE)
        self.sequence_pointers = np.frombuffer(buf, dtype=np.int64, count=n, offset=HEADER_SIZE + 4 * n)
        self.document_indices = np.frombuffer(buf, dtype=np.int64, count=d, offset=HEADER_SIZE + 12 * n)
        self.sequence_modes = (
            np.frombuffer(buf, dtype=np.int8, count=n, offset=expected) if size == expected + n and n else None
        )
        self._validate(idx_path, bin_path, n)

    def _validate(self, idx_path, bin_path, n):
        lengths, pointers, docs = self.sequence_lengths, self.sequence_pointers, self.document_indices
        if n and lengths.min() < 0:
            i = int(np.argmax(lengths < 0))
            raise IndexedDatasetError(f"{idx_path}: sequence {i} has negative length {lengths[i]}")
        if docs[0] != 0:
            raise IndexedDatasetError(f"{idx_path}: document indices start at {docs[0]}, expected 0")
        if docs[-1] != n:
            raise IndexedDatasetError(
                f"{idx_path}: document indices end at {docs[-1]}, expected the sequence count {n}"
            )
        if len(docs) > 1 and np.any(np.diff(docs) < 0):
            i = int(np.argmax(np.diff(docs) < 0))
            raise IndexedDatasetError(
                f"{idx_path}: document indices out of order at position {i + 1} ({docs[i]} then {docs[i + 1]})"
            )
        itemsize = self.dtype.itemsize
        expected_ptrs = sequence_pointers(lengths, itemsize)
        if not np.array_equal(pointers, expected_ptrs):
            self._check_dtype_code(idx_path, bin_path, lambda size: np.array_equal(
                pointers, sequence_pointers(lengths, size)))
            i = int(np.argmax(pointers != expected_ptrs))
            raise IndexedDatasetError(
                f"{idx_path}: sequence {i} starts at byte {pointers[i]} but the lengths before it put it at "
                f"{expected_ptrs[i]} (offsets and lengths disagree)"
            )
        if not os.path.exists(bin_path):
            raise IndexedDatasetError(f"{bin_path}: data file does not exist (index {idx_path} is present)")
        bin_size = os.path.getsize(bin_path)
        need = int(pointers[-1]) + int(lengths[-1]) * itemsize if n else 0
        if bin_size != need:
            if not n or int(pointers[-1]) == 0:  # offsets say nothing about the item size: the .bin size does
                tokens = int(lengths.sum(dtype=np.int64))
                self._check_dtype_code(idx_path, bin_path, lambda size: tokens and bin_size == tokens * size)
            raise IndexedDatasetError(
                f"{bin_path}: size {bin_size} bytes does not match {idx_path}, whose offsets and lengths "
                f"need {need} bytes of {self.dtype}{' (truncated data file)' if bin_size < need else ''}"
            )


    def _check_dtype_code(self, idx_path, bin_path, fits):
        """Raise the "wrong dtype code" error when another item size than the code's explains the files."""
        sizes = sorted({np.dtype(t).itemsize for t in DTYPE_CODES.values()} - {self.dtype.itemsize})
        matches = [size for size in sizes if fits(size)]
        if matches:
            names = " or ".join(sorted(str(np.dtype(t)) for t in DTYPE_CODES.values()
                                       if np.dtype(t).itemsize == matches[0]))
            raise IndexedDatasetError(
                f"{idx_path}: dtype code {self.code} ({self.dtype}, {self.dtype.itemsize} bytes per token) does not "
                f"match the data: the offsets and {bin_path} fit {matches[0]} bytes per token ({names}); the index's "
                f"dtype code is wrong (or the .bin belongs to another dataset)")


class IndexedDataset:
    """Memory-mapped reader of PREFIX.bin/PREFIX.idx; `ds[i]` is a zero-copy view of sequence i.

    Opening validates the whole pair (header, counts, offsets, document indices, .bin size) and raises
    IndexedDatasetError naming the file on any inconsistency. Picklable: workers re-open the files.
    """

    def __init__(self, path_prefix, mmap=True):
        self.path_prefix = os.fspath(path_prefix)
        self.mmap = mmap
        self._open()

    def _open(self):
        idx_path, bin_path = index_file_path(self.path_prefix), data_file_path(self.path_prefix)
        self._index = _Index(idx_path, bin_path)
        self.dtype = self._index.dtype
        self.sequence_lengths = self._index.sequence_lengths
        self.sequence_pointers = self._index.sequence_pointers
        self.document_indices = self._index.document_indices
        self.sequence_modes = self._index.sequence_modes
        self._bin = None
        self._bin_file = None
        if self.mmap:
            size = os.path.getsize(bin_path)
            self._bin = np.memmap(bin_path, mode="r", dtype=np.uint8) if size else np.empty(0, np.uint8)
        else:
            self._bin_file = open(bin_path, "rb")

    def __getstate__(self):
        return (self.path_prefix, self.mmap)

    def __setstate__(self, state):
        self.path_prefix, self.mmap = state
        self._open()

    def __len__(self):
        return len(self.sequence_lengths)

    @property
    def num_documents(self):
        return len(self.document_indices) - 1

    @property
    def num_tokens(self):
        return int(self.sequence_lengths.sum(dtype=np.int64))

    def _read(self, byte_offset, count):
        if self._bin is not None:
            return np.frombuffer(self._bin, dtype=self.dtype, count=count, offset=byte_offset)
        data = os.pread(self._bin_file.fileno(), count * self.dtype.itemsize, byte_offset)
        return np.frombuffer(data, dtype=self.dtype, count=count)

    def _check_index(self, i):
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"sequence index must be an int or slice, not {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences in {self.path_prefix}")
        return i

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError(f"slices must be contiguous (step 1), got step {step}")
            if stop <= start:
                return []
            lengths = self.sequence_lengths[start:stop]
            flat = self._read(int(self.sequence_pointers[start]), int(lengths.sum(dtype=np.int64)))
            return np.split(flat, np.cumsum(lengths[:-1], dtype=np.int64))
        i = self._check_index(idx)
        return self._read(int(self.sequence_pointers[i]), int(self.sequence_lengths[i]))

    def get(self, idx, offset=0, length=None):
        """Tokens [offset, offset + length) of sequence idx (to its end when length is None)."""
        i = self._check_index(idx)
        seq_len = int(self.sequence_lengths[i])
        if length is None:
            length = seq_len - offset
        if offset < 0 or length < 0 or offset + length > seq_len:
            raise IndexError(f"get({i}, offset={offset}, length={length}) exceeds sequence length {seq_len}")
        return self._read(int(self.sequence_pointers[i]) + offset * self.dtype.itemsize, length)

    def document(self, d):
        """All tokens of document d (its sequences concatenated), as one array."""
        if not 0 <= d < self.num_documents:
            raise IndexError(f"document {d} out of range for {self.num_documents} documents")
        a, b = int(self.document_indices[d]), int(self.document_indices[d + 1])
        if a == b:
            return np.empty(0, dtype=self.dtype)
        total = int(self.sequence_lengths[a:b].sum(dtype=np.int64))
        return self._read(int(self.sequence_pointers[a]), total)

    def close(self):
        if self._bin_file is not None:
            self._bin_file.close()
            self._bin_file = None
        self._bin = None

    def __repr__(self):
        return (f"IndexedDataset({self.path_prefix!r}, sequences={len(self)}, documents={self.num_documents}, "
                f"dtype={self.dtype})")


class IndexedDatasetBuilder:
    """Writes PREFIX.bin then PREFIX.idx under temporary names; `finalize` renames both into place.

    Until finalize, nothing exists under the final names; `abort()` (or leaving a `with` block by an
    exception) removes the temporary data file.
    """

    def __init__(self, bin_path, dtype=np.uint16):
        self.bin_path = os.fspath(bin_path)
        self.dtype = np.dtype(dtype)
        dtype_code(self.dtype)
        self._tmp_bin = temporary_path(self.bin_path)
        self._data = open(self._tmp_bin, "wb", buffering=1 << 20)
        self.sequence_lengths = array.array("q")
        self.document_indices = array.array("q", [0])
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self._range = (info.min, info.max)
        else:
            self._range = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()

    def _as_array(self, tokens):
        if hasattr(tokens, "detach"):  # torch tensors, without importing torch
            tokens = tokens.detach().cpu().numpy()
        src = np.asarray(tokens)
        if src.ndim != 1:
            src = src.reshape(-1)
        if self._range is not None and src.size and src.dtype != self.dtype:
            lo, hi = src.min(), src.max()
            if lo < self._range[0] or hi > self._range[1]:
                raise IndexedDatasetError(
                    f"{self.bin_path}: token values [{lo}, {hi}] do not fit dtype {self.dtype}"
                )
        return np.ascontiguousarray(src, dtype=self.dtype)

    def add_item(self, tokens):
        """Append one sequence (to the current document)."""
        arr = self._as_array(tokens)
        self._data.write(arr.tobytes())
        self.sequence_lengths.append(arr.size)

    def end_document(self):
        """Close the current document (after its add_item calls)."""
        self.document_indices.append(len(self.sequence_lengths))

    def add_document(self, tokens, lengths):
        """Append a whole document: `tokens` concatenated, split into sequences of `lengths`."""
        arr = self._as_array(tokens)
        lengths = [int(x) for x in lengths]
        if sum(lengths) != arr.size:
            raise IndexedDatasetError(f"add_document: lengths sum to {sum(lengths)} but {arr.size} tokens were given")
        self._data.write(arr.tobytes())
        self.sequence_lengths.extend(lengths)
        self.document_indices.append(len(self.sequence_lengths))

    def add_packed_documents(self, data, doc_lengths):
        """Append documents already packed as raw bytes of this dtype; document i is one sequence of
        doc_lengths[i] tokens (an empty document adds no sequence, as Megatron's add_document([], []) does)."""
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        if int(lengths.sum()) * self.dtype.itemsize != len(data):
            raise IndexedDatasetError(
                f"add_packed_documents: {len(data)} bytes given for {int(lengths.sum())} tokens of {self.dtype}"
            )
        self._data.write(data)
        base = len(self.sequence_lengths)
        nonempty = lengths[lengths > 0]
        self.sequence_lengths.extend(nonempty.tolist())
        self.document_indices.extend((base + np.cumsum(lengths > 0, dtype=np.int64)).tolist())

    def add_index(self, path_prefix):
        """Append every document of an existing dataset (same dtype), copying its .bin."""
        other = IndexedDataset(path_prefix)
        if other.dtype != self.dtype:
            raise IndexedDatasetError(
                f"{index_file_path(path_prefix)}: dtype {other.dtype} differs from the builder's {self.dtype}"
            )
        offset = len(self.sequence_lengths)
        self.sequence_lengths.extend(other.sequence_lengths.astype(np.int64))
        self.document_indices.extend((other.document_indices[1:] + offset).astype(np.int64))
        other.close()
        self._data.flush()
        with open(data_file_path(path_prefix), "rb") as f:
            shutil.copyfileobj(f, self._data, 8 << 20)

    def finalize(self, idx_path):
        """Write the index and move .bin and .idx to their final names (the .idx last)."""
        idx_path = os.fspath(idx_path)
        lengths = np.frombuffer(self.sequence_lengths, dtype=np.int64)
        if lengths.size and lengths.max() > np.iinfo(np.int32).max:
            raise IndexedDatasetError(f"{self.bin_path}: a sequence exceeds the int32 length limit of MMIDIDX")
        if self.document_indices[-1] != len(self.sequence_lengths):
            # Trailing items without end_document() would be lost to readers: close that document.
            self.end_document()
        self._data.flush()
        os.fsync(self._data.fileno())
        self._data.close()
        tmp_idx = temporary_path(idx_path)
        try:
            with open(tmp_idx, "wb") as f:
                f.write(encode_index(self.dtype, lengths, np.frombuffer(self.document_indices, dtype=np.int64)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(self._tmp_bin, self.bin_path)
            os.replace(tmp_idx, idx_path)
        except BaseException:
            for p in (tmp_idx, self._tmp_bin):
                if os.path.exists(p):
                    os.unlink(p)
            raise

    def abort(self):
        """Drop everything written so far (removes the temporary data file)."""
        if not self._data.closed:
            self._data.close()
        if os.path.exists(self._tmp_bin):
            os.unlink(self._tmp_bin)


def write_dataset(prefix, documents, dtype=np.uint16):
    """Convenience: write `documents` (each a token list, one sequence per document) as PREFIX.bin/.idx."""
    builder = IndexedDatasetBuilder(data_file_path(prefix), dtype=dtype)
    with builder:
        for doc in documents:
            builder.add_document(doc, [len(doc)])
        builder.finalize(index_file_path(prefix))
    return prefix
