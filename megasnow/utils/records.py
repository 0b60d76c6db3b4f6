"""Read records from JSONL (plain, .gz, .zst) and Parquet shards, with file:line on every error.

Malformed records are skipped and counted (or raised with `strict=True`), never silently dropped.
"""
import glob
import gzip
import io
import json
import os
from dataclasses import dataclass, field

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)


class RecordError(ValueError):
    """A malformed record; the message names the file and line (or Parquet row)."""


@dataclass
class SkipLog:
    """Counts skipped records by reason and keeps the first few locations for the report."""

    counts: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    max_examples: int = 20

    def add(self, reason, where):
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {reason}")

    @property
    def total(self):
        return sum(self.counts.values())

    def merge(self, other):
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])


def expand_inputs(inputs):
    """Expand paths, globs and folders into a sorted list of record files; error on no match."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            for root, _, names in os.walk(item):
                files += [os.path.join(root, n) for n in names if is_record_file(n)]
        else:
            matches = glob.glob(item, recursive=True) if glob.has_magic(item) else [item]
            if not matches or not all(os.path.exists(m) for m in matches):
                raise FileNotFoundError(f"input {item!r} matches no file")
            files += matches
    if not files:
        raise FileNotFoundError(f"no JSONL or Parquet files found in {list(inputs)}")
    return sorted(set(files))


def is_record_file(name):
    return name.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def open_text_lines(path):
    """Binary line iterator over a JSONL file, transparently decompressing .gz and .zst."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def iter_records(path, skips=None, strict=False, columns=None, batch_rows=4096):
    """Yield (position, record dict) from one JSONL or Parquet file.

    position is the 1-based line number (JSONL) or 0-based row (Parquet). Lines that are not
    valid UTF-8 JSON objects are skipped and logged in `skips` (raised when `strict`).
    """
    path = os.fspath(path)
    if path.endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        row = 0
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            for rec in batch.to_pylist():
                yield row, rec
                row += 1
        return
    with open_text_lines(path) as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except UnicodeDecodeError:
                _skip(skips, strict, "invalid UTF-8", f"{path}:{lineno}")
                continue
            except ValueError as e:
                _skip(skips, strict, f"bad JSON ({str(e).splitlines()[0][:80]})", f"{path}:{lineno}")
                continue
            yield lineno, rec


def _skip(skips, strict, reason, where):
    if strict:
        raise RecordError(f"{where}: {reason}")
    if skips is not None:
        skips.add(reason, where)
