#!/usr/bin/env python
"""Tokenize JSONL(.gz/.zst)/Parquet documents into Megatron indexed datasets <prefix>_<key>_document.{bin,idx}.

Drop-in for Megatron-LM's tools/preprocess_data.py: each --tokenizer-type writes the ids Megatron-LM writes for it
(docs/data.md, "What each --tokenizer-type writes"); the hot path runs without the GIL.
"""
import argparse
import collections
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from megasnow.data.dataset_meta import (meta_path, read_dataset_meta, token_settings_differ,  # noqa: E402
                                        tokenizer_sha256, write_dataset_meta)
from megasnow.data.indexed import IndexedDatasetBuilder, best_dtype  # noqa: E402
from megasnow.data.megatron_tokenizers import (  # noqa: E402
    HUGGINGFACE_TYPES,
    TOKENIZER_TYPES,
    TokenizerOptions,
    build_document_encoder,
    end_of_document,
)
from megasnow.data.output_check import check_output_prefix, folders_removed_on_failure  # noqa: E402
from megasnow.errors import UserError  # noqa: E402
from megasnow.utils.cli import ArgumentParser, run_tool, warn  # noqa: E402
from megasnow.utils.records import (  # noqa: E402
    PARQUET_SUFFIXES,
    DamagedShard,
    RecordError,
    ShardReadError,
    SkipLog,
    check_usable,
    expand_inputs,
    iter_line_blocks,
    read_error_types,
)
from megasnow.utils.units import format_bytes, format_bytes_rate, format_duration, format_rate  # noqa: E402

# The Ctrl-C line: binarizing is all or nothing (outputs are renamed into place at the end), so nothing resumes.
ON_INTERRUPT = "nothing was written (outputs appear only at the end); rerun the same command to start over"

BLOCK_BYTES = 1 << 20  # small blocks keep every worker busy until the end of the input


def output_paths(output_prefix, key):
    base = f"{output_prefix}_{key}_document"
    return base + ".bin", base + ".idx"


def check_json_keys(keys):
    """UserError for a key given twice (two datasets under one name: the second would overwrite the first)."""
    seen = set()
    for k in keys:
        if k in seen:
            raise UserError(f"--json-keys names {k!r} twice; give each key once (one dataset is written per key)")
        seen.add(k)


def check_outputs(output_prefix, keys):
    """OutputPathError (naming --output-prefix) when the outputs cannot be written there; creates nothing."""
    outputs = [p for k in keys for p in output_paths(output_prefix, k)]
    check_output_prefix(output_prefix, outputs + [meta_path(output_paths(output_prefix, k)[0][: -len(".bin")])
                                                  for k in keys])


class EmptyInputError(RecordError):
    """--strict and the input holds no document."""


# ------------------------------------------------------------------------------------------ reading

def iter_jsonl_blocks(path, block_bytes):
    """Yield (first line number, bytes of whole lines, on-disk bytes consumed so far) from one JSONL file;
    ShardReadError after the readable blocks of a damaged file (megasnow.utils.records.iter_line_blocks)."""
    return iter_line_blocks(path, block_bytes)


def iter_parquet_blocks(path, keys, batch_rows=2048):
    """Yield (first row, {key: column values}, bytes consumed estimate, text bytes) from one Parquet file.

    A file that cannot be read (truncated, corrupt, zero bytes) raises ShardReadError after the batches before the
    damage; a missing column raises RecordError.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        missing = [k for k in keys if k not in pf.schema_arrow.names]
        if missing:
            raise RecordError(f"{path}: Parquet file has no column {missing[0]!r} (columns: {pf.schema_arrow.names})")
        size, total_rows = os.path.getsize(path), max(pf.metadata.num_rows, 1)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(keys)):
            arrays = [batch.column(k) for k in keys]
            columns = {k: a.to_pylist() for k, a in zip(keys, arrays)}
            # UTF-8 bytes of the string columns (a non-string column's records are reported as malformed later)
            text_bytes = sum(pc.sum(pc.binary_length(a)).as_py() or 0 for a in arrays
                             if pa.types.is_string(a.type) or pa.types.is_large_string(a.type))
            yield row, columns, int(size * min(1.0, (row + batch.num_rows) / total_rows)), text_bytes
            row += batch.num_rows
    except read_error_types() as e:
        raise ShardReadError(path, row, e) from e


# ------------------------------------------------------------------------------------------ work per block

class BlockEncoder:
    """Parses and tokenizes one block; runs in a worker thread and holds the GIL only between native calls."""

    def __init__(self, encoder, keys, eod, dtype):
        try:
            from megasnow import _binarize
        except ImportError as e:
            raise ImportError("megasnow._binarize (csrc/binarize.cpp) is not built: run `pip install -e .` or "
                              "`python setup.py build_ext --inplace`") from e
        self.native = _binarize
        self.encoder = encoder
        self.keys = list(keys)
        self.eod = -1 if eod is None else int(eod)
        self.itemsize = np.dtype(dtype).itemsize
        self.max_id = min(encoder.vocab_size - 1, int(np.iinfo(dtype).max))

    def _pack(self, texts):
        return self.native.pack_tokens(self.encoder.encode_batch(texts), self.itemsize, self.eod, self.max_id)

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


class WorkerPool:
    """Daemon worker threads fed from a queue: on Ctrl-C or an error the main thread cancels what is queued and
    leaves at once; a block still being encoded in C++ is abandoned with the process (it writes nothing)."""

    def __init__(self, workers):
        self.jobs = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._run, name=f"binarize-{i}", daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                future.set_exception(e)

    def submit(self, fn, *args):
        future = Future()
        self.jobs.put((fn, args, future))
        return future

    def close(self, pending=()):
        for future in pending:
            future.cancel()
        for _ in self.threads:
            self.jobs.put(None)


# ------------------------------------------------------------------------------------------ driver

class Progress:
    """tqdm bar over input bytes with docs/s and MB/s, refreshed every log_interval documents."""

    def __init__(self, total_bytes, log_interval, enabled):
        self.t0 = time.time()
        self.docs = 0
        self.text_bytes = 0
        self.next_log = log_interval
        self.log_interval = log_interval
        self.bar = None
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
                dt = time.time() - self.t0
                self.bar.set_postfix_str(f"{format_rate(self.docs, dt, 'docs')}, "
                                         f"{format_bytes_rate(self.text_bytes, dt)} of text", refresh=False)
                self.next_log = self.docs + self.log_interval

    def close(self):
        if self.bar is not None:
            self.bar.close()


def preprocess(inputs, output_prefix, tokenizer_model, tokenizer_type=None, json_keys=("text",), workers=1,
               append_eod=False, log_interval=1000, strict=False, block_bytes=BLOCK_BYTES, progress=True,
               tokenizer_options=None, eod_token=None, on_damaged=None, on_note=None):
    """Binarize every input file into one indexed dataset per key, plus PREFIX.meta.json. Returns a summary dict.

    The ids are Megatron-LM's for `tokenizer_options` (TokenizerOptions; by default built from tokenizer_model and
    tokenizer_type); with `append_eod` each non-empty document ends with Megatron's eod, or `eod_token`'s id.
    Documents keep input order. Malformed records are skipped and counted (file:line in the summary). A damaged
    shard (truncated gzip/zstd, corrupt Parquet) keeps the documents before the damage and is reported in
    "damaged_shards" and to `on_damaged(DamagedShard)`. With strict=True the first malformed record raises
    RecordError, the first damaged shard ShardReadError, and an input without documents EmptyInputError; nothing is
    then written under the final names. `on_note(text)` receives remarks (a fallback end-of-document token).
    """
    t0 = time.time()
    keys = list(json_keys)
    check_json_keys(keys)
    check_outputs(output_prefix, keys)
    files = expand_inputs(inputs)
    opts = tokenizer_options or TokenizerOptions(tokenizer_model, tokenizer_type)
    encoder = build_document_encoder(opts)
    eod, eod_text, note = end_of_document(encoder, eod_token) if append_eod else (None, None, None)
    if note and on_note is not None:
        on_note(note)
    dtype = best_dtype(encoder.vocab_size)
    block_encoder = BlockEncoder(encoder, keys, eod, dtype)
    skips = SkipLog()
    damaged = []
    tokens = {k: 0 for k in keys}
    docs = 0
    bytes_done_before = 0
    sizes = {f: os.path.getsize(f) for f in files}
    bar = Progress(sum(sizes.values()), log_interval, progress)
    workers = max(1, int(workers))
    builders = {}
    finished = []  # files renamed into place by this run: removed again if a later key fails
    pool = WorkerPool(workers)
    pending = collections.deque()
    try:
        for k in keys:
            builders[k] = IndexedDatasetBuilder(output_paths(output_prefix, k)[0], dtype=dtype)
        for path in files:
            is_parquet = path.endswith(PARQUET_SUFFIXES)
            blocks = (iter_parquet_blocks(path, keys) if is_parquet else
                      ((first, block, consumed, len(block))
                       for first, block, consumed in iter_jsonl_blocks(path, block_bytes)))
            where = (lambda pos: f"{path}:row {pos}") if is_parquet else (lambda pos: f"{path}:{pos}")
            fn = block_encoder.parquet if is_parquet else block_encoder.jsonl
            file_docs, file_skips = docs, skips.total

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

            damage = None
            blocks = iter(blocks)
            while True:
                try:
                    first, block, consumed, nbytes = next(blocks)
                except StopIteration:
                    break
                except ShardReadError as e:
                    damage = e
                    break
                pending.append((pool.submit(fn, first, block), consumed, nbytes))
                while len(pending) >= 2 * workers:  # bounded memory: at most 2 blocks per worker in flight
                    write(*pending.popleft())
            while pending:
                write(*pending.popleft())
            if damage is not None:  # the documents before the damage are written; the shard is reported
                records = (docs - file_docs) + (skips.total - file_skips)
                if strict:
                    raise ShardReadError(path, records, damage.cause, damage.byte_offset) from damage.cause
                shard = DamagedShard(path, records, damage.error, damage.byte_offset)
                damaged.append(shard)
                if on_damaged is not None:
                    on_damaged(shard)
            bytes_done_before += sizes[path]
        # every record malformed (a CSV named .jsonl) or lacking a key: an error even without --strict
        keyless = sum(n for reason, n in skips.counts.items() if reason.startswith(("missing key", "key '")))
        check_usable(files, used=docs, malformed=skips.total - keyless, keyless=keyless, keys=keys, skips=skips)
        if docs == 0 and strict:
            raise EmptyInputError(f"no documents in the input ({_describe_files(files)}); nothing written")
        settings = id_settings(encoder, opts.tokenizer_model, append_eod, eod, eod_text)
        for k in keys:  # the metadata first, so a dataset whose .idx is in place always has it
            meta = write_dataset_meta(output_paths(output_prefix, k)[0][: -len(".bin")], dict(
                settings, json_key=k, documents=docs, tokens=tokens[k], dtype=str(np.dtype(dtype))))
            finished += [meta, *output_paths(output_prefix, k)]
            builders[k].finalize(output_paths(output_prefix, k)[1])
    except BaseException:
        pool.close([f for f, _, _ in pending])
        bar.close()
        for b in builders.values():
            b.abort()
        for path in finished:  # all or nothing: a failure at the second key takes back the first key's dataset
            if os.path.lexists(path):
                os.unlink(path)
        raise
    pool.close()
    bar.close()
    elapsed = time.time() - t0
    return {
        "files": files,
        "outputs": {k: output_paths(output_prefix, k) for k in keys},
        "metadata": {k: meta_path(output_paths(output_prefix, k)[0][: -len(".bin")]) for k in keys},
        "documents": docs,
        "tokens": tokens,
        "skipped": skips.total,
        "skipped_by_reason": dict(skips.counts),
        "skipped_examples": list(skips.examples),
        "damaged_shards": [vars(d) for d in damaged],
        "input_bytes": sum(sizes.values()),
        "seconds": elapsed,
        "dtype": str(np.dtype(dtype)),
        "tokenizer": f"{encoder.tokenizer_type} ({encoder.semantics}): {encoder.rule}",
        "eod": None if eod is None else f"{eod_text!r} (id {eod})",
        "notes": [note] if note else [],
    }


def _describe_files(files):
    empty = sum(1 for f in files if os.path.getsize(f) == 0)
    head = files[0] if len(files) == 1 else f"{len(files)} files, first {files[0]}"
    return head + (f"; {empty} of them zero bytes" if empty else "")


def id_settings(encoder, tokenizer_model, append_eod, eod_id, eod_token):
    """What the written ids mean, as PREFIX.meta.json records it (dataset_meta.TOKEN_KEYS and the tokenizer file's
    path and SHA-256); the same dict decides whether --skip-existing may keep earlier outputs."""
    return dict(encoder.settings(), tokenizer_model=os.path.abspath(tokenizer_model),
                tokenizer_sha256=tokenizer_sha256(tokenizer_model), append_eod=bool(append_eod), eod_id=eod_id,
                eod_token=eod_token)


def outputs_complete(output_prefix, keys, settings=None):
    """True when every key's dataset exists and validates and, if `settings` (token settings) are given, its
    metadata records the same ones (outputs are renamed into place last)."""
    from megasnow.data.indexed import IndexedDataset, IndexedDatasetError

    for k in keys:
        prefix = output_paths(output_prefix, k)[0][: -len(".bin")]
        try:
            IndexedDataset(prefix).close()
        except IndexedDatasetError:
            return False
        if settings is not None:
            meta = read_dataset_meta(prefix)
            if meta is not None and token_settings_differ(meta, settings):
                return False
    return True


def format_summary(s):
    secs = s["seconds"]
    lines = [
        f"binarized {s['documents']:,} documents from {len(s['files'])} file(s) in {format_duration(secs)} "
        f"({format_rate(s['documents'], secs, 'docs')}, {format_bytes_rate(s['input_bytes'], secs)} of input, "
        f"{format_bytes(s['input_bytes'])} in all)",
        f"  tokens: {s['tokenizer']}; end of document: {s['eod'] or 'none appended (no --append-eod)'}",
    ]
    for k, (b, i) in s["outputs"].items():
        lines.append(f"  {k}: {s['tokens'][k]:,} tokens ({s['dtype']}) -> {b}, {i}")
    lines.append(f"  skipped {s['skipped']:,} malformed record(s)")
    for reason, n in sorted(s["skipped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {n:,} x {reason}")
    for ex in s["skipped_examples"]:
        lines.append(f"    at {ex}")
    if s["damaged_shards"]:
        lines.append(f"  {len(s['damaged_shards'])} damaged shard(s), their readable records kept:")
        for d in s["damaged_shards"]:
            lines.append(f"    {DamagedShard(**d).describe()}")
    return "\n".join(lines)


class _Unsupported(argparse.Action):
    """A Megatron-LM flag that megasnow refuses, with the reason (instead of argparse's "unrecognized")."""

    def __init__(self, option_strings, dest, reason="", **kwargs):
        self.reason = reason
        super().__init__(option_strings, dest, nargs="*", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} (a Megatron-LM flag) is not supported: {self.reason}")


UNSUPPORTED = {
    "--split-sentences": "code is not split into sentences",
    "--keep-newlines": "it only applies to --split-sentences",
    "--lang": "it only applies to --split-sentences",
    "--vocab-file": "GPT-2/BERT vocabulary files are not supported; use a SentencePiece .model or a HF tokenizer",
    "--merge-file": "GPT-2 BPE merge files are not supported; use a SentencePiece .model or a HF tokenizer",
    "--partitions": "inputs are read as a stream; give several files with --input instead",
    "--tokenizer-special-tokens": "train the special tokens into the tokenizer (tools/train_tokenizer.py)",
    "--tokenizer-sentencepiece-legacy": "it only matters with --tokenizer-special-tokens",
}


def get_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_argument_group("input data")
    g.add_argument("--input", nargs="+", required=True, help="JSONL(.gz/.zst) or Parquet files, globs or folders")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract, one dataset each")
    g = p.add_argument_group("tokenizer (Megatron-LM's flags)")
    g.add_argument("--tokenizer-type", default=None, choices=TOKENIZER_TYPES,
                   help="default: HuggingFaceTokenizer for a .json file or a folder, else SentencePieceTokenizer")
    g.add_argument("--tokenizer-model", required=True, help="SentencePiece .model, or HF folder / tokenizer.json")
    g.add_argument("--append-eod", action="store_true",
                   help="append the end-of-document token to each non-empty document (Megatron's eod for the "
                        "tokenizer type: SentencePiece eos, HF eos_token; legacy SentencePieceTokenizer <EOD>)")
    g.add_argument("--legacy-tokenizer", action="store_true",
                   help="Megatron-LM's legacy megatron.training.tokenizer (the default through core 0.14): "
                        "Llama2Tokenizer prepends BOS, SentencePieceTokenizer uses <EOD> and cuts at special tokens")
    g.add_argument("--tokenizer-hf-no-include-special-tokens", action="store_true",
                   help="HuggingFaceTokenizer: encode without the special tokens its post-processor adds (BOS...); "
                        "Megatron-LM before core 0.17 did so by default")
    g.add_argument("--tokenizer-hf-include-special-tokens", action="store_true",
                   help="HuggingFaceTokenizer: include them (the default since core 0.17; accepted for old scripts)")
    g.add_argument("--tokenizer-hf-no-use-fast", action="store_true",
                   help="HuggingFaceTokenizer: load the slow (Python) tokenizer")
    g.add_argument("--tokenizer-hf-use-fast", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--trust-remote-code", action="store_true",
                   help="HuggingFaceTokenizer: allow the tokenizer's own Python code to run (transformers)")
    g.add_argument("--eod-token", default=None, metavar="TOKEN",
                   help="megasnow option: with --append-eod, append this token instead of Megatron's eod "
                        "(e.g. '<|endoftext|>', megasnow's convention before it followed Megatron)")
    for flag, reason in UNSUPPORTED.items():
        g.add_argument(flag, action=_Unsupported, reason=reason)
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="writes PREFIX_<key>_document.{bin,idx,meta.json}")
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizer threads")
    g.add_argument("--log-interval", type=int, default=1000, help="documents between progress updates")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first malformed record or damaged shard, and on an input without documents")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--skip-existing", action="store_true",
                   help="do nothing when every output already exists, validates and was made with the same "
                        "tokenizer settings (for reruns of a pipeline)")
    g.add_argument("--block-bytes", type=int, default=BLOCK_BYTES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    if args.log_interval < 1:
        p.error(f"--log-interval must be at least 1, got {args.log_interval}")
    if args.eod_token is not None and not args.append_eod:
        p.error("--eod-token only says which token --append-eod appends; add --append-eod")
    if args.tokenizer_hf_no_include_special_tokens and args.tokenizer_hf_include_special_tokens:
        p.error("--tokenizer-hf-no-include-special-tokens and --tokenizer-hf-include-special-tokens contradict")
    hf_flags = [f for f, on in (("--tokenizer-hf-no-include-special-tokens",
                                 args.tokenizer_hf_no_include_special_tokens),
                                ("--tokenizer-hf-no-use-fast", args.tokenizer_hf_no_use_fast)) if on]
    if hf_flags and args.legacy_tokenizer:
        p.error(f"{hf_flags[0]} has no effect with --legacy-tokenizer (Megatron's legacy HuggingFaceTokenizer "
                f"always includes special tokens and uses the fast tokenizer); drop one of them")
    return args


def main(argv=None):
    args = get_args(argv)
    check_json_keys(args.json_keys)
    check_outputs(args.output_prefix, args.json_keys)
    options = TokenizerOptions(args.tokenizer_model, args.tokenizer_type, legacy_tokenizer=args.legacy_tokenizer,
                               hf_include_special_tokens=not args.tokenizer_hf_no_include_special_tokens,
                               hf_use_fast=not args.tokenizer_hf_no_use_fast,
                               trust_remote_code=args.trust_remote_code)
    kind = options.resolved_type()
    if kind not in HUGGINGFACE_TYPES and (args.tokenizer_hf_no_include_special_tokens or args.tokenizer_hf_no_use_fast
                                          or args.trust_remote_code):
        warn(f"the --tokenizer-hf-* and --trust-remote-code flags only apply to HuggingFaceTokenizer; "
             f"ignored for {kind}")
    if args.skip_existing and outputs_complete(args.output_prefix, args.json_keys):
        encoder = build_document_encoder(options)
        eod, text, _ = end_of_document(encoder, args.eod_token) if args.append_eod else (None, None, None)
        wanted = id_settings(encoder, args.tokenizer_model, args.append_eod, eod, text)
        if outputs_complete(args.output_prefix, args.json_keys, wanted):
            print(f"outputs for {args.output_prefix} exist and validate; skipping (--skip-existing)")
            return 0
        warn(f"outputs for {args.output_prefix} were made with other tokenizer settings; rebuilding them")
    with folders_removed_on_failure(args.output_prefix):
        summary = preprocess(args.input, args.output_prefix, args.tokenizer_model, kind, args.json_keys, args.workers,
                             args.append_eod, args.log_interval, args.strict, args.block_bytes,
                             progress=not args.no_progress, tokenizer_options=options, eod_token=args.eod_token,
                             on_damaged=lambda d: warn(f"damaged shard {d.describe()}"), on_note=warn)
    print(format_summary(summary), flush=True)
    if summary["documents"] == 0:  # after the summary, so it is the last line seen
        warn(f"no documents in the input ({_describe_files(summary['files'])}); wrote an empty dataset "
             f"(--strict makes this an error)")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, on_interrupt=ON_INTERRUPT))
