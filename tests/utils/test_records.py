"""read_shards and iter_line_blocks on damaged shards: truncated gzip, zstd and Parquet, and zero-byte files keep
the records before the damage and report the shard with its path, records and byte position."""
import gzip
import hashlib
import json

import pytest

from megasnow.utils.records import ReadReport, ShardReadError, iter_line_blocks, read_shards

# Hashes keep the data from compressing to nothing, so half a zstd file still holds whole blocks.
RECORDS = [{"text": f"def f{i}():\n    return '{hashlib.sha256(str(i).encode()).hexdigest()}'\n" * (1 + i % 3), "i": i}
           for i in range(2000)]
LINES = [json.dumps(r).encode() + b"\n" for r in RECORDS]


def _write(path, kind, cut=None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path, row_group_size=500)
        data = open(path, "rb").read()
    else:
        raw = b"".join(LINES)
        data = {"gz": gzip.compress, "zst": zstandard.ZstdCompressor().compress, "jsonl": lambda b: b}[kind](raw)
    with open(path, "wb") as f:
        f.write(data if cut is None else data[: int(len(data) * cut)])
    return str(path)


@pytest.mark.parametrize("kind,name", [("gz", "s.jsonl.gz"), ("zst", "s.jsonl.zst"), ("parquet", "s.parquet")])
def test_truncated_shard_keeps_its_readable_records(tmp_path, kind, name):
    good = _write(tmp_path / ("a_" + name), kind)
    cut = _write(tmp_path / ("b_" + name), kind, cut=0.5)
    report, damaged = ReadReport(), []
    got = [(p, rec) for p, _, rec in read_shards([good, cut], report, on_damaged=damaged.append)]
    assert [rec["i"] for p, rec in got if p == good] == list(range(2000))
    kept = [rec["i"] for p, rec in got if p == cut]
    assert kept == list(range(len(kept)))  # a prefix of the shard, in order
    assert len(report.damaged) == 1 and damaged == report.damaged
    d = report.damaged[0]
    assert d.path == cut and d.records == len(kept) and report.records == 2000 + len(kept)
    if kind == "parquet":  # the footer is gone: nothing is readable, and there is no byte position
        assert kept == [] and d.byte_offset is None and "ArrowInvalid" in d.error
    else:
        assert 0 < len(kept) < 2000 and "EOFError" in d.error
        assert d.byte_offset == sum(len(line) for line in LINES[: len(kept)])
        assert f"at byte {d.byte_offset:,} of the decompressed data" in d.describe()
    assert d.describe().startswith(f"{cut}: unreadable after {len(kept)} records (")
    with pytest.raises(ShardReadError, match=rf"{cut}: unreadable after {len(kept)} records"):
        list(read_shards([good, cut], strict=True))


@pytest.mark.parametrize("name,damaged", [("z.jsonl", False), ("z.jsonl.gz", False), ("z.jsonl.zst", False),
                                          ("z.parquet", True)])
def test_zero_byte_files(tmp_path, name, damaged):
    (tmp_path / name).write_bytes(b"")
    report = ReadReport()
    assert list(read_shards([str(tmp_path / name)], report)) == []
    assert report.files == 1 and bool(report.damaged) == damaged  # an empty stream is empty; Parquet needs a footer


@pytest.mark.parametrize("kind,name", [("gz", "s.jsonl.gz"), ("zst", "s.jsonl.zst")])
def test_line_blocks_yield_every_complete_line_before_the_damage(tmp_path, kind, name):
    path = _write(tmp_path / name, kind, cut=0.5)
    blocks = []
    with pytest.raises(ShardReadError) as err:
        for block in iter_line_blocks(path, block_bytes=8192):
            blocks.append(block)
    data = b"".join(b for _, b, _ in blocks)
    n = data.count(b"\n")
    assert data == b"".join(LINES[:n]) and n > 0  # whole lines only, none lost before the damage
    assert err.value.records == n and err.value.byte_offset == len(data)
    # first line numbers follow the lines
    assert [b[0] for b in blocks] == [1 + sum(x[1].count(b"\n") for x in blocks[:i]) for i in range(len(blocks))]
    full = _write(tmp_path / ("full_" + name), kind)
    assert b"".join(b for _, b, _ in iter_line_blocks(full, block_bytes=8192)) == b"".join(LINES)
