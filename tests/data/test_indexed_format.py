"""MMIDIDX format: golden bytes, byte-compatibility with megatron-core both ways, and validation of bad files."""
import os
import pickle
import struct

import numpy as np
import pytest

from megasnow.data.indexed import (
    HEADER_SIZE,
    IndexedDataset,
    IndexedDatasetBuilder,
    IndexedDatasetError,
    best_dtype,
    data_file_path,
    index_file_path,
    write_dataset,
)
from tests.conftest import require_anchor

# Two documents: doc 0 = sequences [1, 2, 3] and [7]; doc 1 = [65535]; uint16.
GOLDEN_IDX = bytes.fromhex(
    "4d4d49444944580000"  # magic MMIDIDX\0\0
    "0100000000000000"  # version 1
    "08"  # dtype code 8 = uint16
    "0300000000000000"  # 3 sequences
    "0300000000000000"  # 3 document indices (2 documents + 1)
    "03000000" "01000000" "01000000"  # int32 lengths
    "0000000000000000" "0600000000000000" "0800000000000000"  # int64 byte offsets
    "0000000000000000" "0200000000000000" "0300000000000000"  # int64 document indices
)
GOLDEN_BIN = bytes.fromhex("0100" "0200" "0300" "0700" "ffff")


def _build_golden(prefix):
    b = IndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16)
    b.add_item([1, 2, 3])
    b.add_item(np.array([7], dtype=np.int64))
    b.end_document()
    b.add_document([65535], [1])
    b.finalize(index_file_path(prefix))
    return prefix


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_golden_bytes_written(tmp_path):
    prefix = _build_golden(str(tmp_path / "g"))
    assert _read(prefix + ".idx") == GOLDEN_IDX
    assert _read(prefix + ".bin") == GOLDEN_BIN
    # No temporary files are left beside the outputs.
    assert sorted(os.listdir(tmp_path)) == ["g.bin", "g.idx"]


def test_golden_bytes_read(tmp_path):
    prefix = str(tmp_path / "g")
    (tmp_path / "g.idx").write_bytes(GOLDEN_IDX)
    (tmp_path / "g.bin").write_bytes(GOLDEN_BIN)
    ds = IndexedDataset(prefix)
    assert len(ds) == 3 and ds.num_documents == 2 and ds.dtype == np.uint16
    assert [x.tolist() for x in ds[0:3]] == [[1, 2, 3], [7], [65535]]
    assert ds[-1].tolist() == [65535]
    assert ds.get(0, offset=1, length=2).tolist() == [2, 3]
    assert ds.get(0, offset=2).tolist() == [3]
    assert ds.document(0).tolist() == [1, 2, 3, 7]
    assert ds.sequence_lengths.dtype == np.int32 and ds.sequence_lengths.tolist() == [3, 1, 1]
    assert ds.sequence_pointers.dtype == np.int64 and ds.sequence_pointers.tolist() == [0, 6, 8]
    assert ds.document_indices.tolist() == [0, 2, 3]
    # Zero-copy: the item is a read-only view of the mapped .bin, not a copy.
    assert not ds[0].flags.owndata and not ds[0].flags.writeable
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds.get(0, offset=2, length=2)
    nommap = IndexedDataset(prefix, mmap=False)
    assert [nommap[i].tolist() for i in range(3)] == [[1, 2, 3], [7], [65535]]


def test_pickle_roundtrip(tmp_path):
    prefix = _build_golden(str(tmp_path / "g"))
    ds = pickle.loads(pickle.dumps(IndexedDataset(prefix)))
    assert ds[2].tolist() == [65535] and ds.document_indices.tolist() == [0, 2, 3]


def test_best_dtype():
    assert best_dtype(32000) == np.uint16 and best_dtype(65499) == np.uint16
    assert best_dtype(65500) == np.int32 and best_dtype(151000) == np.int32


def test_builder_range_check_and_abort(tmp_path):
    b = IndexedDatasetBuilder(str(tmp_path / "x.bin"), dtype=np.uint16)
    with pytest.raises(IndexedDatasetError, match="do not fit"):
        b.add_item([1, 70000])
    b.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        with IndexedDatasetBuilder(str(tmp_path / "y.bin")) as b2:
            b2.add_item([1])
            raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []


def test_add_index_merges(tmp_path):
    rng = np.random.default_rng(0)
    docs_a = [rng.integers(0, 50000, rng.integers(0, 40)).tolist() for _ in range(30)]
    docs_b = [rng.integers(0, 50000, rng.integers(1, 40)).tolist() for _ in range(20)]
    pa = write_dataset(str(tmp_path / "a"), docs_a)
    pb = write_dataset(str(tmp_path / "b"), docs_b)
    b = IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    b.add_index(pa)
    b.add_index(pb)
    b.finalize(str(tmp_path / "m.idx"))
    m = IndexedDataset(str(tmp_path / "m"))
    assert [x.tolist() for x in m[0 : len(m)]] == docs_a + docs_b
    assert m.document_indices.tolist() == list(range(51))
    # Merged bytes equal writing everything at once.
    pc = write_dataset(str(tmp_path / "c"), docs_a + docs_b)
    assert _read(pc + ".idx") == _read(str(tmp_path / "m.idx"))
    assert _read(pc + ".bin") == _read(str(tmp_path / "m.bin"))
    b32 = IndexedDatasetBuilder(str(tmp_path / "n.bin"), dtype=np.int32)
    with pytest.raises(IndexedDatasetError, match="dtype uint16 differs"):
        b32.add_index(pa)
    b32.abort()


# ---------------------------------------------------------------- megatron-core, both directions

@pytest.fixture(scope="module")
def mcore():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require_anchor("megatron.core.datasets.indexed_dataset", "megatron-core")


def _random_docs(seed, vocab, n_docs):
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, vocab, rng.integers(0, 30)) for _ in range(rng.integers(1, 4))] for _ in range(n_docs)]


@pytest.mark.parametrize("dtype,vocab", [(np.uint16, 65000), (np.int32, 200000)])
def test_megatron_reads_ours_byte_identical(tmp_path, mcore, dtype, vocab):
    import torch

    docs = _random_docs(1, vocab, 25)
    ours = IndexedDatasetBuilder(str(tmp_path / "ours.bin"), dtype=dtype)
    theirs = mcore.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for doc in docs:
        for seq in doc:
            ours.add_item(seq)
            theirs.add_item(torch.from_numpy(seq))
        ours.end_document()
        theirs.end_document()
    ours.finalize(str(tmp_path / "ours.idx"))
    theirs.finalize(str(tmp_path / "theirs.idx"))
    assert _read(str(tmp_path / "ours.idx")) == _read(str(tmp_path / "theirs.idx"))
    assert _read(str(tmp_path / "ours.bin")) == _read(str(tmp_path / "theirs.bin"))
    m = mcore.IndexedDataset(str(tmp_path / "ours"))
    flat = [s for doc in docs for s in doc]
    assert len(m) == len(flat)
    for i, seq in enumerate(flat):
        assert m[i].tolist() == seq.tolist()
    assert m.document_indices.tolist() == np.cumsum([0] + [len(d) for d in docs]).tolist()


def test_we_read_megatron_files(tmp_path, mcore):
    import torch

    docs = _random_docs(2, 30000, 40)
    theirs = mcore.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    for doc in docs:
        theirs.add_document(torch.from_numpy(np.concatenate(doc)), [len(s) for s in doc])
    theirs.finalize(str(tmp_path / "m.idx"))
    ds = IndexedDataset(str(tmp_path / "m"))
    ref = mcore.IndexedDataset(str(tmp_path / "m"))
    assert ds.dtype == np.uint16 and len(ds) == len(ref)
    np.testing.assert_array_equal(ds.sequence_lengths, ref.sequence_lengths)
    np.testing.assert_array_equal(ds.sequence_pointers, ref.index.sequence_pointers)
    np.testing.assert_array_equal(ds.document_indices, ref.document_indices)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i], ref[i])
        if ds.sequence_lengths[i] > 3:
            np.testing.assert_array_equal(ds.get(i, 1, 2), ref.get(i, 1, 2))


# ---------------------------------------------------------------- validation

def _write_pair(tmp_path, idx, bin_=GOLDEN_BIN, name="bad"):
    (tmp_path / f"{name}.idx").write_bytes(idx)
    (tmp_path / f"{name}.bin").write_bytes(bin_)
    return str(tmp_path / name)


def _patch(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


LEN0 = HEADER_SIZE  # offset of the first int32 length
PTR0 = HEADER_SIZE + 3 * 4  # first int64 pointer
DOC0 = HEADER_SIZE + 3 * 12  # first document index


@pytest.mark.parametrize(
    "idx,bin_,message",
    [
        (b"NOTANIDX\x00" + GOLDEN_IDX[9:], GOLDEN_BIN, r"bad\.idx: bad magic"),
        (_patch(GOLDEN_IDX, 9, "<Q", 2), GOLDEN_BIN, r"bad\.idx: unsupported MMIDIDX version 2"),
        (_patch(GOLDEN_IDX, 17, "<B", 9), GOLDEN_BIN, r"bad\.idx: unknown dtype code 9"),
        (GOLDEN_IDX[:20], GOLDEN_BIN, r"bad\.idx: truncated index: 20 bytes"),
        (GOLDEN_IDX[:-8], GOLDEN_BIN, r"bad\.idx: size .* does not match its header .*\(truncated\)"),
        (_patch(GOLDEN_IDX, 18, "<Q", 4), GOLDEN_BIN, r"bad\.idx: size .*\(4 sequences"),
        (GOLDEN_IDX + b"\x00" * 5, GOLDEN_BIN, r"bad\.idx: size .* does not match"),
        (GOLDEN_IDX, GOLDEN_BIN[:-2], r"bad\.bin: size 8 bytes does not match .*need 10 bytes.*truncated data file"),
        (GOLDEN_IDX, GOLDEN_BIN + b"\x00\x00", r"bad\.bin: size 12 bytes does not match"),
        (_patch(GOLDEN_IDX, LEN0, "<i", -1), GOLDEN_BIN, r"sequence 0 has negative length -1"),
        (_patch(GOLDEN_IDX, PTR0 + 8, "<q", 4), GOLDEN_BIN, r"sequence 1 starts at byte 4 .*put it at 6 \(offsets and lengths disagree"),
        (_patch(GOLDEN_IDX, DOC0, "<q", 1), GOLDEN_BIN, r"document indices start at 1, expected 0"),
        (_patch(GOLDEN_IDX, DOC0 + 16, "<q", 2), GOLDEN_BIN, r"document indices end at 2, expected the sequence count 3"),
        (_patch(GOLDEN_IDX, DOC0 + 8, "<q", 5), GOLDEN_BIN, r"out of order at position 2 \(5 then 3\)"),
    ],
    ids=["magic", "version", "dtype", "short-header", "truncated-idx", "count-vs-size", "trailing-bytes",
         "truncated-bin", "long-bin", "negative-length", "bad-pointer", "docs-start", "docs-end", "docs-order"],
)
def test_corrupt_pairs_raise_one_clear_error(tmp_path, idx, bin_, message):
    prefix = _write_pair(tmp_path, idx, bin_)
    with pytest.raises(IndexedDatasetError, match=message):
        IndexedDataset(prefix)


def test_missing_files(tmp_path):
    with pytest.raises(IndexedDatasetError, match=r"nope\.idx: index file does not exist"):
        IndexedDataset(str(tmp_path / "nope"))
    (tmp_path / "half.idx").write_bytes(GOLDEN_IDX)
    with pytest.raises(IndexedDatasetError, match=r"half\.bin: data file does not exist"):
        IndexedDataset(str(tmp_path / "half"))


def test_empty_dataset(tmp_path):
    prefix = write_dataset(str(tmp_path / "e"), [])
    ds = IndexedDataset(prefix)
    assert len(ds) == 0 and ds.num_documents == 0 and ds[0:0] == []
