#!/usr/bin/env python
"""Tokenize JSONL(.gz/.zst)/Parquet documents into Megatron indexed datasets <prefix>_<key>_document.{bin,idx}.

Drop-in for Megatron-LM's tools/preprocess_data.py; the hot path runs without the GIL (see docs/data.md).
"""
import argparse
import collections
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from megasnow.data.indexed import IndexedDatasetBuilder, best_dtype  # noqa: E402
from megasnow.data.tokenizer import HFTokenizer, SentencePieceTokenizer, TokenizerError  # noqa: E402
from megasnow.utils.records import (  # noqa: E402
    PARQUET_SUFFIXES,
    RecordError,
    SkipLog,
    expand_inputs,
    open_text_lines,
)

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")
HUGGINGFACE_TYPES = ("HuggingFaceTokenizer",)
BLOCK_BYTES = 1 << 20  # small blocks keep every worker busy until the end of the input


def output_paths(output_prefix, key):
    base = f"{output_prefix}_{key}_document"
    return base + ".bin", base + ".idx"


def load_tokenizer_for(tokenizer_type, model_path):
    if tokenizer_type in SENTENCEPIECE_TYPES:
        return SentencePieceTokenizer(model_path)
    if tokenizer_type in HUGGINGFACE_TYPES:
        return HFTokenizer(model_path)
    raise TokenizerError(f"--tokenizer-type {tokenizer_type!r} is not supported "
                         f"(use one of {SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES})")


# ------------------------------------------------------------------------------------------ reading

class _CountingFile:
    """Wraps a raw file to report how many on-disk bytes were consumed (for progress on compressed input)."""

    def __init__(self, f):
        self.f = f

    def position(self):
        try:
            return self.f.tell()
        except (OSError, ValueError):
            return 0


def iter_jsonl_blocks(path, block_bytes):
    """Yield (first line number, bytes of whole lines, on-disk bytes consumed so far) from one JSONL file."""
    stream = open_text_lines(path)
    raw = getattr(stream, "fileobj", None) or getattr(stream, "raw", None) or stream
    counter = _CountingFile(raw if hasattr(raw, "tell") else stream)
    line = 1
    tail = b""
    with stream:
        while True:
            chunk = stream.read(block_bytes)
            if not chunk:
                if tail:
                    yield line, tail, counter.position()
                return
            buf = tail + chunk if tail else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than the block: keep reading
                tail = buf
                continue
            block, tail = buf[: cut + 1], buf[cut + 1:]
            yield line, block, counter.position()
            line += block.count(b"\n")


def iter_parquet_blocks(path, keys, batch_rows=2048):
    """Yield (first row, {key: column values}, bytes consumed estimate, text bytes) from one Parquet file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    missing = [k for k in keys if k not in pf.schema_arrow.names]
    if missing:
        raise RecordError(f"{path}: Parquet file has no column {missing[0]!r} (columns: {pf.schema_arrow.names})")
    size, total_rows, row = os.path.getsize(path), max(pf.metadata.num_rows, 1), 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(keys)):
        arrays = [batch.column(k) for k in keys]
        columns = {k: a.to_pylist() for k, a in zip(keys, arrays)}
        # UTF-8 bytes of the string columns (a non-string column's records are reported as malformed later)
        text_bytes = sum(pc.sum(pc.binary_length(a)).as_py() or 0 for a in arrays
                         if pa.types.is_string(a.type) or pa.types.is_large_string(a.type))
        yield row, columns, int(size * min(1.0, (row + batch.num_rows) / total_rows)), text_bytes
        row += batch.num_rows


# ------------------------------------------------------------------------------------------ work per block

class BlockEncoder:
    """Parses and tokenizes one block; runs in a worker thread and holds the GIL only between native calls."""

    def __init__(self, tokenizer, keys, append_eod, dtype):
        try:
            from megasnow import _binarize
        except ImportError as e:
            raise ImportError("megasnow._binarize (csrc/binarize.cpp) is not built: run `pip install -e .` or "
                              "`python setup.py build_ext --inplace`") from e
        self.native = _binarize
        self.tok = tokenizer
        self.keys = list(keys)
        self.eod = tokenizer.eod_id if append_eod else -1
        self.itemsize = np.dtype(dtype).itemsize
        self.max_id = min(tokenizer.vocab_size - 1, int(np.iinfo(dtype).max))

    def _encode(self, texts):
        if isinstance(self.tok, SentencePieceTokenizer):
            # SentencePiece's C++ encoder, GIL released, int32 numpy buffers out.
            return self.tok.sp.Encode(texts, out_type="numpy", num_threads=1)
        strs = [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
        return [np.asarray(ids, dtype=np.int32) for ids in self.tok.encode_batch(strs)]

    def _pack(self, texts):
        return self.native.pack_tokens(self._encode(texts), self.itemsize, self.eod, self.max_id)

    def jsonl(self, first_line, block):
        texts, lines, errors, _ = self.native.parse_jsonl_block(block, self.keys, first_line)
        packed = [self._pack(t) for t in texts]
        return packed, lines, errors

    def parquet(self, first_row, columns):
        keep, errors = [], []
        for i in range(len(columns[self.keys[0]])):
            for k in self.keys:
                v = columns[k][i]
                if not isinstance(v, str):
                    errors.append((first_row + i, f"key '{k}' is {'null' if v is None else 'not a string'}"))
                    break
            else:
                keep.append(i)
        packed = [self._pack([columns[k][i] for i in keep]) for k in self.keys]
        return packed, [first_row + i for i in keep], errors


# ------------------------------------------------------------------------------------------ driver

class Progress:
    """tqdm bar over input bytes with docs/s and MB/s, plus a log line every log_interval documents."""

    def __init__(self, total_bytes, log_interval, enabled):
        self.t0 = time.time()
        self.docs = 0
        self.text_bytes = 0
        self.next_log = log_interval
        self.log_interval = log_interval
        self.bar = None
        self.enabled = enabled
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="binarize", mininterval=1.0,
                            file=sys.stderr)
        self.done_bytes = 0

    def update(self, docs, consumed_bytes, text_bytes):
        self.docs += docs
        self.text_bytes += text_bytes
        if self.bar is not None:
            self.bar.update(max(0, consumed_bytes - self.done_bytes))
            self.done_bytes = max(self.done_bytes, consumed_bytes)
            if self.docs >= self.next_log:
                dt = max(time.time() - self.t0, 1e-9)
                self.bar.set_postfix_str(f"{self.docs / dt:,.0f} docs/s, {self.text_bytes / dt / 1e6:.2f} MB/s",
                                         refresh=False)
                self.next_log = self.docs + self.log_interval

    def close(self):
        if self.bar is not None:
            self.bar.close()


def preprocess(inputs, output_prefix, tokenizer_model, tokenizer_type=None, json_keys=("text",), workers=1,
               append_eod=False, log_interval=1000, strict=False, block_bytes=BLOCK_BYTES, progress=True):
    """Binarize every input file into one indexed dataset per key. Returns a summary dict.

    Documents keep input order. Malformed records are skipped and counted (file:line in the summary), or
    raise RecordError at the first one with strict=True; outputs then never appear under their final names.
    """
    t0 = time.time()
    files = expand_inputs(inputs)
    if tokenizer_type is None:
        tokenizer_type = "HuggingFaceTokenizer" if tokenizer_model.endswith(".json") else "SentencePieceTokenizer"
    tok = load_tokenizer_for(tokenizer_type, tokenizer_model)
    dtype = best_dtype(tok.vocab_size)
    keys = list(json_keys)
    encoder = BlockEncoder(tok, keys, append_eod, dtype)
    builders = {k: IndexedDatasetBuilder(output_paths(output_prefix, k)[0], dtype=dtype) for k in keys}
    skips = SkipLog()
    tokens = {k: 0 for k in keys}
    docs = 0
    bytes_done_before = 0
    bar = Progress(sum(os.path.getsize(f) for f in files), log_interval, progress)
    workers = max(1, int(workers))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="binarize") as pool:
            for path in files:
                pending = collections.deque()
                is_parquet = path.endswith(PARQUET_SUFFIXES)
                blocks = (iter_parquet_blocks(path, keys) if is_parquet else
                          ((first, block, consumed, len(block))
                           for first, block, consumed in iter_jsonl_blocks(path, block_bytes)))
                where = (lambda pos: f"{path}:row {pos}") if is_parquet else (lambda pos: f"{path}:{pos}")

                def write(future, consumed, nbytes):
                    nonlocal docs
                    packed, lines, errors = future.result()
                    for pos, reason in errors:
                        if strict:
                            raise RecordError(f"{where(pos)}: {reason}")
                        skips.add(reason, where(pos))
                    for k, (data, lengths) in zip(keys, packed):
                        builders[k].add_packed_documents(data, lengths)
                        tokens[k] += int(sum(lengths))
                    docs += len(lines)
                    bar.update(len(lines), bytes_done_before + consumed, nbytes)

                for first, block, consumed, nbytes in blocks:
                    fn = encoder.parquet if is_parquet else encoder.jsonl
                    pending.append((pool.submit(fn, first, block), consumed, nbytes))
                    # Bounded memory: at most 2 blocks per worker are in flight.
                    while len(pending) >= 2 * workers:
                        write(*pending.popleft())
                while pending:
                    write(*pending.popleft())
                bytes_done_before += os.path.getsize(path)
    except BaseException:
        bar.close()
        for b in builders.values():
            b.abort()
        raise
    bar.close()
    for k in keys:
        builders[k].finalize(output_paths(output_prefix, k)[1])
    elapsed = time.time() - t0
    input_bytes = sum(os.path.getsize(f) for f in files)
    return {
        "files": files,
        "outputs": {k: output_paths(output_prefix, k) for k in keys},
        "documents": docs,
        "tokens": tokens,
        "skipped": skips.total,
        "skipped_by_reason": dict(skips.counts),
        "skipped_examples": list(skips.examples),
        "input_bytes": input_bytes,
        "seconds": elapsed,
        "dtype": str(np.dtype(dtype)),
    }


def outputs_complete(output_prefix, keys):
    """True when every key's dataset exists and passes validation (outputs are renamed into place last)."""
    from megasnow.data.indexed import IndexedDataset, IndexedDatasetError

    for k in keys:
        try:
            IndexedDataset(output_paths(output_prefix, k)[0][: -len(".bin")]).close()
        except IndexedDatasetError:
            return False
    return True


def format_summary(s):
    lines = [
        f"binarized {s['documents']:,} documents from {len(s['files'])} file(s) in {s['seconds']:.1f}s "
        f"({s['documents'] / max(s['seconds'], 1e-9):,.0f} docs/s, "
        f"{s['input_bytes'] / max(s['seconds'], 1e-9) / 1e6:.2f} MB/s of input)",
    ]
    for k, (b, i) in s["outputs"].items():
        lines.append(f"  {k}: {s['tokens'][k]:,} tokens ({s['dtype']}) -> {b}, {i}")
    lines.append(f"  skipped {s['skipped']:,} malformed record(s)")
    for reason, n in sorted(s["skipped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {n:,} x {reason}")
    for ex in s["skipped_examples"]:
        lines.append(f"    at {ex}")
    return "\n".join(lines)


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_argument_group("input data")
    g.add_argument("--input", nargs="+", required=True, help="JSONL(.gz/.zst) or Parquet files, globs or folders")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract, one dataset each")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", default=None, choices=SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES,
                   help="default: HuggingFaceTokenizer for a .json model, else SentencePieceTokenizer")
    g.add_argument("--tokenizer-model", required=True, help="SentencePiece .model or HF tokenizer.json")
    g.add_argument("--append-eod", action="store_true", help="append the end-of-document token to each document")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True)
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizer threads")
    g.add_argument("--log-interval", type=int, default=1000, help="documents between progress updates")
    g.add_argument("--strict", action="store_true", help="fail on the first malformed record")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--skip-existing", action="store_true",
                   help="do nothing when every output already exists and validates (for reruns of a pipeline)")
    g.add_argument("--block-bytes", type=int, default=BLOCK_BYTES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if args.skip_existing and outputs_complete(args.output_prefix, args.json_keys):
        print(f"outputs for {args.output_prefix} exist and validate; skipping (--skip-existing)")
        return 0
    try:
        summary = preprocess(args.input, args.output_prefix, args.tokenizer_model, args.tokenizer_type,
                             args.json_keys, args.workers, args.append_eod, args.log_interval, args.strict,
                             args.block_bytes, progress=not args.no_progress)
    except (RecordError, TokenizerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
