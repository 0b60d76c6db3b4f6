"""Damaged inputs never end in a traceback: preprocess_data (several workers) and train_tokenizer keep a damaged
shard's readable records, name it with the records and byte position reached, and write the good shards; --strict
stops with exit 2 and one line naming the file; merge_datasets names a damaged .bin/.idx."""
import gzip
import json
import os
import sys

import numpy as np
import pytest

from megasnow.data.indexed import IndexedDataset, write_dataset
from megasnow.utils.cli import run_tool
from tests.data.code_fixtures import real_code_files, sentencepiece_model

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import merge_datasets  # noqa: E402
import preprocess_data  # noqa: E402
import train_tokenizer  # noqa: E402

pytest.importorskip("megasnow._binarize")

TEXTS = [t for _, t in real_code_files()[:90]]


def run_cli(main, argv):
    try:
        return run_tool(main, argv)
    except SystemExit as e:
        return e.code


def _shards(folder, damaged_kind):
    """Three shards of 30 documents each; the middle one is `damaged_kind` cut in half (or zero bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    folder.mkdir()
    lines = [json.dumps({"text": t}).encode() + b"\n" for t in TEXTS]
    (folder / "a.jsonl").write_bytes(b"".join(lines[:30]))
    (folder / "c.jsonl").write_bytes(b"".join(lines[60:]))
    middle = b"".join(lines[30:60])
    if damaged_kind == "parquet":
        name = "b.parquet"
        pq.write_table(pa.Table.from_pylist([{"text": t} for t in TEXTS[30:60]]), folder / name, row_group_size=5)
        data = (folder / name).read_bytes()
    else:
        name = {"gz": "b.jsonl.gz", "zst": "b.jsonl.zst", "empty": "b.jsonl"}[damaged_kind]
        data = {"gz": gzip.compress, "zst": zstandard.ZstdCompressor().compress, "empty": lambda b: b""}[damaged_kind](
            middle)
    (folder / name).write_bytes(data[: len(data) // 2])
    return str(folder / name)


def _expected(tmp_path, texts):
    src = tmp_path / "expected.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    preprocess_data.preprocess([str(src)], str(tmp_path / "expected"), sentencepiece_model(), append_eod=True,
                               progress=False)
    return str(tmp_path / "expected_text_document")


def _bytes(prefix):
    return open(prefix + ".bin", "rb").read(), open(prefix + ".idx", "rb").read()


@pytest.mark.parametrize("kind", ["gz", "zst", "parquet"])
def test_preprocess_keeps_readable_records_of_a_cut_shard(tmp_path, capsys, kind):
    bad = _shards(tmp_path / "in", kind)
    argv = ["--input", str(tmp_path / "in"), "--tokenizer-model", sentencepiece_model(), "--append-eod",
            "--workers", "2", "--block-bytes", "16384", "--no-progress", "--output-prefix", str(tmp_path / "out")]
    assert run_cli(preprocess_data.main, argv) == 0
    out, err = capsys.readouterr()
    warning = [line for line in err.splitlines() if line.startswith("warning: damaged shard")]
    assert len(warning) == 1 and f"damaged shard {bad}: unreadable after " in warning[0], err
    kept = int(warning[0].split("unreadable after ")[1].split()[0])
    if kind == "parquet":
        assert kept == 0 and "ArrowInvalid" in warning[0]
    else:
        assert 0 < kept < 30 and "EOFError" in warning[0] and "of the decompressed data" in warning[0]
        offset = int(warning[0].split("at byte ")[1].split()[0].replace(",", ""))
        assert offset == sum(len(json.dumps({"text": t}).encode()) + 1 for t in TEXTS[30:30 + kept])
    assert "1 damaged shard(s), their readable records kept" in out and f"binarized {60 + kept} documents" in out
    expected = _expected(tmp_path, TEXTS[:30 + kept] + TEXTS[60:])
    assert _bytes(str(tmp_path / "out_text_document")) == _bytes(expected)


def test_preprocess_strict_stops_at_the_damaged_shard(tmp_path, capsys):
    bad = _shards(tmp_path / "in", "gz")
    argv = ["--input", str(tmp_path / "in"), "--tokenizer-model", sentencepiece_model(), "--append-eod", "--strict",
            "--workers", "2", "--block-bytes", "16384", "--no-progress", "--output-prefix", str(tmp_path / "out")]
    assert run_cli(preprocess_data.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: unreadable after ") and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["in"]  # nothing written, no temporary file left


def test_preprocess_zero_byte_shards(tmp_path, capsys):
    _shards(tmp_path / "in", "empty")  # b.jsonl: zero bytes, nothing to report
    (tmp_path / "in" / "d.parquet").write_bytes(b"")  # a zero-byte Parquet file has no footer: damaged
    s = preprocess_data.preprocess([str(tmp_path / "in")], str(tmp_path / "out"), sentencepiece_model(),
                                   append_eod=True, workers=2, progress=False)
    assert s["documents"] == 60 and len(s["files"]) == 4
    assert [(d["path"], d["records"]) for d in s["damaged_shards"]] == [(str(tmp_path / "in" / "d.parquet"), 0)]
    assert _bytes(str(tmp_path / "out_text_document")) == _bytes(_expected(tmp_path, TEXTS[:30] + TEXTS[60:]))


def test_train_tokenizer_on_a_cut_shard(tmp_path, capsys):
    bad = _shards(tmp_path / "in", "gz")
    argv = ["--input", str(tmp_path / "in"), "--output-prefix", str(tmp_path / "tok" / "t"), "--vocab-size", "400",
            "--input-sentence-size", "5000", "--num-threads", "1"]
    assert run_cli(train_tokenizer.main, argv) == 0
    out, err = capsys.readouterr()
    assert f"warning: damaged shard {bad}: unreadable after " in err and "1 damaged shard(s)" in out
    assert sorted(os.listdir(tmp_path / "tok")) == ["t.model", "t.vocab"]
    assert run_cli(train_tokenizer.main, argv[:-6] + ["--output-prefix", str(tmp_path / "strict" / "t"),
                                                      "--strict", "--vocab-size", "400"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: unreadable after ") and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "strict" / "t.model")


@pytest.mark.parametrize("damage,message", [
    ("bin_cut", r"b\.bin: size \d+ bytes does not match .*b\.idx.* \(truncated data file\)"),
    ("idx_cut", r"b\.idx: size \d+ bytes does not match its header .* \(truncated\)"),
    ("idx_magic", r"b\.idx: bad magic"),
    ("dtype_code", r"b\.idx: dtype code 4 \(int32, 4 bytes per token\) does not match the data: .* fit 2 bytes per "
                   r"token \(int16 or uint16\); the index's dtype code is wrong"),
    ("bin_missing", r"b\.bin: data file does not exist"),
])
def test_merge_names_a_damaged_input(tmp_path, capsys, damage, message):
    import re

    a = write_dataset(str(tmp_path / "a"), [[1, 2, 3], [4]], dtype=np.uint16)
    b = write_dataset(str(tmp_path / "b"), [[5, 6], [7, 8, 9], [10]], dtype=np.uint16)
    idx, binf = tmp_path / "b.idx", tmp_path / "b.bin"
    if damage == "bin_cut":
        binf.write_bytes(binf.read_bytes()[:-2])
    elif damage == "idx_cut":
        idx.write_bytes(idx.read_bytes()[:-3])
    elif damage == "idx_magic":
        idx.write_bytes(b"X" + idx.read_bytes()[1:])
    elif damage == "dtype_code":
        raw = bytearray(idx.read_bytes())
        raw[17] = 4  # int32 instead of uint16
        idx.write_bytes(bytes(raw))
    else:
        binf.unlink()
    rc = run_cli(merge_datasets.main, ["--input", a, b, "--output-prefix", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not any(p.name.startswith(("m.", ".m.")) for p in tmp_path.iterdir())


def test_wrong_dtype_code_is_not_called_a_truncated_file(tmp_path):
    from megasnow.data.indexed import IndexedDatasetError

    for docs in ([[1, 2, 3], [4, 5]], [[1, 2, 3]]):  # with offsets to compare, and with one sequence (size only)
        p = write_dataset(str(tmp_path / "d"), docs, dtype=np.int32)
        raw = bytearray(open(p + ".idx", "rb").read())
        raw[17] = 8  # uint16
        open(p + ".idx", "wb").write(bytes(raw))
        with pytest.raises(IndexedDatasetError,
                           match=r"dtype code 8 \(uint16, 2 bytes per token\) does not match") as e:
            IndexedDataset(p)
        assert "truncated" not in str(e.value)
