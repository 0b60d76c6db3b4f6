"""Read records from JSONL (plain, .gz, .zst) and Parquet shards, with file:line on every error.

Malformed records are skipped and counted (or raised with `strict=True`), never silently dropped; a shard that
cannot be read to its end (truncated, corrupt, I/O error) raises ShardReadError after the records before the damage.
`read_shards` is the reader every stage uses over many shards: it keeps a damaged shard's readable records and
reports the shard (path, records reached, error), or stops at it with `strict=True`.
"""
import glob
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass, field

from megasnow.errors import UserError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)


class RecordError(UserError, ValueError):
    """A malformed record; the message names the file and line (or Parquet row)."""


class ShardReadError(RecordError):
    """A shard that stops being readable: truncated or corrupt compression, corrupt Parquet, or an I/O error.

    `records` records were yielded before it (decoding is deterministic, so always the same ones for the same
    bytes). `byte_offset`, when known (JSONL), is where the readable data ends: the number of (decompressed) bytes
    of the complete lines before the damage. `transient` is True for an OS error with an errno (EIO, EACCES,
    ESTALE...), which a retry may cure; corrupt data (EOFError, zlib/zstd/Arrow errors, OS errors without errno such
    as pyarrow's) is not.
    """

    def __init__(self, path, records, cause, byte_offset=None):
        self.path, self.records, self.cause, self.byte_offset = path, records, cause, byte_offset
        self.error = f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}"
        self.transient = isinstance(cause, OSError) and cause.errno is not None
        super().__init__(f"{path}: unreadable after {records} records ({self.error})"
                         f"{describe_byte_offset(path, byte_offset)}")

    def __reduce__(self):  # rebuilt from its fields: raised in a worker process, it reaches the parent intact
        return type(self), (self.path, self.records, self.cause, self.byte_offset)


def describe_byte_offset(path, byte_offset):
    """', at byte N of the decompressed data' (or '... of the file'), or '' when the offset is unknown."""
    if byte_offset is None:
        return ""
    what = "of the decompressed data" if os.fspath(path).endswith((".gz", ".zst")) else "of the file"
    return f", at byte {byte_offset:,} {what}"


def read_error_types():
    """Exception types that mean "this file cannot be read (further)", as opposed to one bad record."""
    return _read_errors()


def _read_errors():
    errors = [OSError, EOFError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    try:
        import pyarrow

        errors.append(pyarrow.ArrowException)
    except ImportError:
        pass
    return tuple(errors)


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


class InputNotFoundError(UserError, FileNotFoundError):
    """An input path, glob or folder that names no record file."""


class UnsupportedInputError(UserError, ValueError):
    """An input file named explicitly whose format (suffix) no reader here supports (e.g. .csv)."""


class UnusableInputError(RecordError):
    """An input whose every record is malformed, or lacks the key(s) the stage reads: nothing could be used."""


SUPPORTED_FORMATS = "JSONL (.jsonl, .json, .ndjson; plain, .gz or .zst) or Parquet (.parquet)"


def check_record_file(path):
    """Return `path` when its suffix is a supported record format, else raise UnsupportedInputError naming it and
    the supported formats (a folder scan skips such files; a file named explicitly must not be parsed as JSONL)."""
    if not is_record_file(os.fspath(path)):
        name = os.path.basename(os.fspath(path))
        suffix = os.path.splitext(name)[1] or "no suffix"
        raise UnsupportedInputError(f"input {os.fspath(path)!r} ({suffix}) is not a supported format: give "
                                    f"{SUPPORTED_FORMATS} files")
    return path


def expand_inputs(inputs, other_files="error", on_duplicate=None):
    """Expand paths, globs and folders into a sorted list of record files.

    Folders are scanned for record files (others are skipped). A file named explicitly (or the only kind a glob
    matches) that is not a record file raises UnsupportedInputError, unless `other_files="keep"` (a stage that also
    reads plain-text files). The same file given twice (repeated, or also found in a folder or glob, compared by
    real path) is read once and reported to `on_duplicate(text)` (default: a `warning:` line): a file's weight is
    set by the blend (data.blend weights), not by repeating it. InputNotFoundError when an input names no file.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    keep_other = other_files == "keep"
    files = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            for root, _, names in os.walk(item):
                files += sorted(os.path.join(root, n) for n in names if is_record_file(n))
        else:
            matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
            if not matches or not all(os.path.exists(m) for m in matches):
                raise InputNotFoundError(f"input {item!r} matches no file; check the path")
            wanted = [m for m in matches if keep_other or is_record_file(m) or os.path.isdir(m)]
            if not wanted:  # a file named (or a glob matching only such files): refuse a .csv, never parse it as JSONL
                check_record_file(matches[0])
            for m in wanted:
                files += expand_inputs([m], other_files, on_duplicate) if os.path.isdir(m) else [m]
    if not files:
        raise InputNotFoundError(f"no JSONL or Parquet files found in {list(inputs)} (looked for "
                                 f"{', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)})")
    seen, unique = {}, []
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            if seen[real] is not None:
                note = (f"input {f!r} is given twice" if seen[real] == f else
                        f"input {f!r} is the same file as {seen[real]!r}")
                (on_duplicate or _warn)(f"{note}; reading it once (to weight a file, use the blend's weights)")
                seen[real] = None  # report each file once
            continue
        seen[real] = f
        unique.append(f)
    return sorted(unique)


def _warn(text):
    from megasnow.utils.cli import warn

    warn(text)


def is_record_file(name):
    return os.fspath(name).endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)


def open_text_lines(path):
    """Binary line iterator over a JSONL file, transparently decompressing .gz and .zst.

    A truncated .gz or .zst raises EOFError at the end of its readable data (gzip does so itself; zstandard's
    stream reader would silently stop, hence _ZstdRaw).
    """
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdRaw(path), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdRaw(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) .zst file; EOFError if the file ends inside a frame.

    tell() is the compressed position, which progress bars compare with the file size.
    """

    def __init__(self, path, chunk=1 << 20):
        import zstandard

        self._f = open(path, "rb")
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._d, self._chunk, self._in_frame = self._new(), chunk, False
        self._pending, self._pos = b"", 0  # decompressed bytes not yet returned start at _pending[_pos]

    def readable(self):
        return True

    def tell(self):
        return self._f.tell()

    def readinto(self, buf):
        while self._pos >= len(self._pending):
            data = self._f.read(self._chunk)
            if not data:
                if self._in_frame:
                    raise EOFError(f"{self._f.name}: zstd stream ended inside a frame (truncated file)")
                return 0
            out = []
            while data:
                self._in_frame = True
                out.append(self._d.decompress(data))
                data = b""
                if self._d.eof:  # frame finished: the rest of this chunk starts the next frame
                    data, self._d, self._in_frame = self._d.unused_data, self._new(), False
            self._pending, self._pos = b"".join(out), 0
        n = min(len(buf), len(self._pending) - self._pos)
        buf[:n] = memoryview(self._pending)[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self):
        self._f.close()
        super().close()


def _disk_position(stream):
    """A function giving how many on-disk (compressed) bytes of the file `stream` reads have been consumed."""
    raw = getattr(stream, "fileobj", None) or getattr(stream, "raw", None) or stream

    def position():
        try:
            return raw.tell()
        except (OSError, ValueError, AttributeError):
            return 0

    return position


def iter_line_blocks(path, block_bytes=1 << 20):
    """Yield (first line number, bytes of whole lines, on-disk bytes consumed so far) from one JSONL file.

    Blocks are about `block_bytes` long and end at a newline (the last one may lack it); .gz and .zst are
    decompressed on the way. A file that cannot be read to its end (truncated or corrupt compression, I/O error)
    first yields every complete line before the damage, then raises ShardReadError whose `records` is the number of
    complete lines before the damage and `byte_offset` their size in decompressed bytes.
    """
    path = os.fspath(path)
    line, offset = 1, 0
    try:
        stream = open_text_lines(path)
    except _read_errors() as e:
        raise ShardReadError(path, 0, e, byte_offset=0) from e
    position = _disk_position(stream)
    # read1: at most one underlying read per call, so a damaged stream loses no data that was decompressed
    read = getattr(stream, "read1", stream.read)
    parts, size = [], 0
    with stream:
        while True:
            try:
                chunk = read(block_bytes)
            except _read_errors() as e:
                buf = b"".join(parts)
                cut = buf.rfind(b"\n")
                if cut >= 0:  # the complete lines before the damage; a cut last line is dropped
                    yield line, buf[: cut + 1], position()
                    line += buf.count(b"\n", 0, cut + 1)
                    offset += cut + 1
                raise ShardReadError(path, line - 1, e, byte_offset=offset) from e
            if chunk:
                parts.append(chunk)
                size += len(chunk)
                if size < block_bytes:
                    continue
            buf = b"".join(parts)
            if not chunk:  # end of the file
                if buf:
                    yield line, buf, position()
                return
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than the block: keep reading
                parts, size = [buf], len(buf)
                continue
            block, tail = buf[: cut + 1], buf[cut + 1:]
            yield line, block, position()
            line += block.count(b"\n")
            offset += len(block)
            parts, size = ([tail], len(tail)) if tail else ([], 0)


def iter_records(path, skips=None, strict=False, columns=None, batch_rows=4096):
    """Yield (position, record dict) from one JSONL or Parquet file.

    position is the 1-based line number (JSONL) or 0-based row (Parquet). Lines that are not
    valid UTF-8 JSON objects are skipped and logged in `skips` (raised when `strict`). A file that cannot be
    read to its end raises ShardReadError once the records before the damage have been yielded.
    """
    path = os.fspath(path)
    count = 0
    offset = [None if path.endswith(PARQUET_SUFFIXES) else 0]  # bytes of the complete lines read so far
    try:
        for item in _iter_records(path, skips, strict, columns, batch_rows, offset):
            yield item
            count += 1
    except _read_errors() as e:
        raise ShardReadError(path, count, e, byte_offset=offset[0]) from e


def _iter_records(path, skips, strict, columns, batch_rows, offset):
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
            offset[0] += len(raw)
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


@dataclass
class DamagedShard:
    """A shard that stopped being readable: how many records came before the damage, and the error.

    `byte_offset` (JSONL only) is where the readable data ends, in bytes of the decompressed stream.
    """

    path: str
    records: int
    error: str
    byte_offset: int | None = None

    def describe(self):
        return (f"{self.path}: unreadable after {self.records} records ({self.error})"
                f"{describe_byte_offset(self.path, self.byte_offset)}; kept the records before it")


@dataclass
class ReadReport:
    """What `read_shards` saw: files and records read, malformed records skipped, damaged shards, and (when it was
    given `keys`) how many well-formed records lack one of them."""

    files: int = 0
    records: int = 0
    skips: SkipLog = field(default_factory=SkipLog)
    damaged: list = field(default_factory=list)
    keyless: int = 0

    def summary(self):
        """A JSON-ready summary for a tool's report."""
        return {"files": self.files, "records": self.records, "skipped_records": self.skips.total,
                "skipped_by_reason": dict(self.skips.counts), "skipped_examples": list(self.skips.examples),
                "damaged_shards": [vars(d) for d in self.damaged]}


def read_shards(files, report=None, strict=False, columns=None, on_damaged=None, keys=None, key_flag="--json-keys"):
    """Yield (path, position, record) over many JSONL/Parquet shards (paths, globs or folders; expand_inputs).

    Malformed records are skipped and counted in `report.skips`. A damaged shard (truncated gzip/zstd, corrupt
    Parquet, a zero-byte Parquet file, an I/O error) keeps the records read before the damage, is appended to
    `report.damaged` and passed to `on_damaged(DamagedShard)` (tools print it as a warning), and reading goes on
    with the next shard. With `strict=True` the first malformed record raises RecordError and the first damaged
    shard raises ShardReadError (both UserErrors naming the file).

    Even without `strict`, an input whose every record is malformed (a CSV named .jsonl), or, with `keys` (the
    record keys the stage reads as strings), whose every record lacks one of them, raises UnusableInputError at the
    end (check_usable: it names the file, the count and the keys the records do have, suggesting `key_flag`).
    Records lacking a key are still yielded (the stage skips and counts them as it does now).
    """
    report = ReadReport() if report is None else report
    paths = expand_inputs(files)
    keys = list(keys or ())
    for path in paths:
        report.files += 1
        try:
            for pos, rec in iter_records(path, skips=report.skips, strict=strict, columns=columns):
                report.records += 1
                if keys and not all(isinstance(rec.get(k), str) for k in keys):
                    report.keyless += 1
                yield path, pos, rec
        except ShardReadError as e:
            if strict:
                raise
            damaged = DamagedShard(path, e.records, e.error, e.byte_offset)
            report.damaged.append(damaged)
            if on_damaged is not None:
                on_damaged(damaged)
    check_usable(paths, used=report.records - report.keyless, malformed=report.skips.total if not report.records
                 else 0, keyless=report.keyless, keys=keys, skips=report.skips, key_flag=key_flag)


TEXT_KEY_PREFERENCE = ("text", "content", "code", "body", "document", "source")


def check_usable(files, used, malformed, keyless=0, keys=(), skips=None, key_flag="--json-keys"):
    """Raise UnusableInputError when records were read but none could be used; return quietly otherwise.

    `used`: records the stage could use; `malformed`: records that are not well-formed (bad JSON, invalid UTF-8);
    `keyless`: well-formed records lacking one of `keys` (or holding a non-string there). An input with no record at
    all (empty files) passes: that is the stage's "no documents" warning. The error names the file(s) and the count;
    for missing keys it lists the keys the records have (sampled from the first records) and suggests
    `key_flag <key>`; for malformed records the commonest reasons, the first place and the supported formats.
    """
    if used > 0 or malformed + keyless == 0:
        return
    files = [os.fspath(f) for f in files]
    where = files[0] if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
    if keyless:
        found = sample_keys(files)
        want = ", ".join(repr(k) for k in keys)
        have = ", ".join(found) if found else "none"
        strings = [k for k in found if found[k]]
        best = sorted(strings, key=lambda k: (TEXT_KEY_PREFERENCE.index(k) if k in TEXT_KEY_PREFERENCE
                                              else len(TEXT_KEY_PREFERENCE), -found[k]))
        hint = (f"pass {key_flag} {best[0]}" if best else f"name the key that holds the text with {key_flag}")
        n = keyless + malformed
        raise UnusableInputError(f"none of the {n:,} records in {where} has the string key"
                                 f"{'s' if len(keys) > 1 else ''} {want} (their keys: {have}); {hint}")
    reasons = ", ".join(f"{n:,} x {r}" for r, n in sorted((skips.counts if skips else {}).items(),
                                                          key=lambda kv: -kv[1])[:2])
    first = f"; first at {skips.examples[0].split(': ', 1)[0]}" if skips and skips.examples else ""
    raise UnusableInputError(f"all {malformed:,} records in {where} are malformed ({reasons}){first}; "
                             f"check that the input is {SUPPORTED_FORMATS}")


def sample_keys(files, limit=200):
    """{key: total length of its string values} over the first `limit` well-formed records of `files` (insertion
    order: the first record's keys first), for messages that say which keys an input has."""
    found, seen = {}, 0
    for path in files:
        try:
            for _, rec in iter_records(path, skips=SkipLog()):
                for k, v in rec.items():
                    found[k] = found.get(k, 0) + (len(v) if isinstance(v, str) else 0)
                seen += 1
                if seen >= limit:
                    return found
        except (ShardReadError, UserError):
            continue
    return found
