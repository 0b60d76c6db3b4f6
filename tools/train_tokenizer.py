#!/usr/bin/env python
"""Train a SentencePiece BPE tokenizer for code with exact round trips (no normalization, byte fallback).

Usage: python tools/train_tokenizer.py --input data/*.jsonl --output-prefix tok/code --vocab-size 32000
"""
import itertools
import os
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megasnow.data import special_tokens  # noqa: E402
from megasnow.data.output_check import check_output_prefix, folders_removed_on_failure  # noqa: E402
from megasnow.data.tokenizer import TokenizerError  # noqa: E402
from megasnow.errors import UserError  # noqa: E402
from megasnow.utils.atomic import temporary_path  # noqa: E402
from megasnow.utils.cli import ArgumentParser, run_tool, warn  # noqa: E402
from megasnow.utils.records import ReadReport, expand_inputs, is_record_file, read_shards  # noqa: E402
from megasnow.utils.units import format_duration, format_rate  # noqa: E402

HEARTBEAT_SECONDS = 15.0


class NoTrainingTextError(UserError):
    """The inputs hold no text to train on."""


@dataclass
class TrainingReport(ReadReport):
    """read_shards' report plus the number of sentences SentencePiece was given."""

    sentences: int = 0


def iter_documents(paths, json_keys, report, strict=False, on_damaged=None):
    """Texts from JSONL/Parquet records (each of json_keys) or whole plain-text files.

    Record files go through read_shards: malformed records are counted in `report.skips`, damaged shards keep their
    readable records and are reported (`report.damaged`, `on_damaged`); with `strict` either stops the run.
    """
    record_files = [p for p in paths if is_record_file(p)]
    if record_files:
        for path, pos, rec in read_shards(record_files, report, strict=strict, on_damaged=on_damaged,
                                          keys=json_keys):
            for key in json_keys:
                value = rec.get(key)
                if isinstance(value, str):
                    yield value
                else:
                    report.skips.add(f"missing or non-string key {key!r}", f"{path}:{pos}")
    for path in paths:
        if is_record_file(path):
            continue
        report.files += 1
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror})") from None
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            report.skips.add("invalid UTF-8", path)


def iter_sentences(documents, max_bytes):
    """Cut documents into SentencePiece training 'sentences' of whole lines, each at most max_bytes.

    Lines keep their newline so the trainer sees indentation and line ends as they are in the code;
    a single line longer than max_bytes is cut at max_bytes.
    """
    for doc in documents:
        chunk, size = [], 0
        for line in doc.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if chunk and size + n > max_bytes:
                yield "".join(chunk)
                chunk, size = [], 0
            while n > max_bytes:
                cut = line[: max_bytes // 4]  # at most 4 bytes per character
                yield cut
                line = line[len(cut):]
                n = len(line.encode("utf-8"))
            chunk.append(line)
            size += n
        if chunk:
            yield "".join(chunk)


def trainer_options(vocab_size, input_sentence_size, num_threads, max_sentence_length=4192):
    """SentencePiece settings for code: identity normalization, whitespace kept, digits split, byte fallback."""
    return dict(
        model_type="bpe",
        vocab_size=vocab_size,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        byte_fallback=True,
        allow_whitespace_only_pieces=True,
        split_by_whitespace=True,
        character_coverage=0.9995,
        max_sentence_length=max_sentence_length,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        user_defined_symbols=list(special_tokens.SPECIAL_TOKENS),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,  # PAD is one of the user-defined special tokens
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
    )


class _Counter:
    """Counts the sentences SentencePiece has pulled (read by the heartbeat); `done` is set at their end."""

    def __init__(self, it):
        self.it, self.n, self.done, self.error = it, 0, threading.Event(), None

    def __iter__(self):
        try:
            for item in self.it:
                self.n += 1
                yield item
        except BaseException as e:  # SentencePiece wraps it in a RuntimeError: keep the original for the user
            self.error = e
            raise
        self.done.set()


def _heartbeat(thread, counter, report, t0, interval, log):
    """Wait for the training thread, logging what it is doing every `interval` seconds."""
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            phase = "reading input" if not counter.done.is_set() else "training (BPE merges)"
            log(f"train_tokenizer: {phase}, {format_duration(time.time() - t0)} elapsed, {counter.n:,} sentences "
                f"from {report.records:,} records")


def train_tokenizer(inputs, output_prefix, vocab_size, json_keys=("text",), input_sentence_size=200_000,
                    num_threads=None, max_sentence_bytes=2048, strict=False, on_damaged=None, log=None,
                    heartbeat_seconds=HEARTBEAT_SECONDS):
    """Train and write output_prefix.model / .vocab atomically; returns (model path, TrainingReport).

    Raises InputNotFoundError for a missing input, UnusableInputError when every record is malformed or lacks
    json_keys, NoTrainingTextError when the inputs hold no text, OutputPathError for an output_prefix under a file,
    TokenizerError
    when SentencePiece refuses the settings (e.g. a vocabulary larger than the text allows). `log(text)` receives a
    progress line every `heartbeat_seconds` while reading and training (SentencePiece itself is silent).
    """
    import sentencepiece as spm

    check_output_prefix(output_prefix, [output_prefix + ".model", output_prefix + ".vocab"])
    paths = expand_inputs(inputs, other_files="keep")  # a file that is not JSONL/Parquet is read as plain text
    report = TrainingReport()
    sentences = iter_sentences(iter_documents(paths, list(json_keys), report, strict, on_damaged), max_sentence_bytes)
    first = next(sentences, None)
    if first is None:
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files ({paths[0]}, ...)"
        raise NoTrainingTextError(f"no training text found in {where}: {report.records} records, "
                                  f"{report.skips.total} skipped, {len(report.damaged)} damaged shard(s); "
                                  f"check --input and --json-keys {' '.join(json_keys)}")
    counter = _Counter(itertools.chain([first], sentences))
    opts = trainer_options(vocab_size, input_sentence_size, num_threads or os.cpu_count() or 1,
                           max_sentence_length=max_sentence_bytes * 2)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)) or ".", exist_ok=True)
    tmp_prefix = temporary_path(output_prefix + ".model")
    outcome = {}

    def run():
        try:
            spm.SentencePieceTrainer.Train(sentence_iterator=iter(counter), model_prefix=tmp_prefix, **opts)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = e

    t0 = time.time()
    # SentencePiece trains in C++ without a word; a thread runs it so this one can report progress and take Ctrl-C.
    thread = threading.Thread(target=run, name="sentencepiece-train", daemon=True)
    try:
        thread.start()
        _heartbeat(thread, counter, report, t0, heartbeat_seconds, log or (lambda s: None))
        error = counter.error or outcome.get("error")
        if isinstance(error, UserError):
            raise error
        if isinstance(error, RuntimeError):
            message = " ".join(str(error).split())
            raise TokenizerError(f"SentencePiece refused to train on {len(paths)} input file(s): {message}") from error
        if error is not None:
            raise error
        os.replace(tmp_prefix + ".vocab", output_prefix + ".vocab")
        os.replace(tmp_prefix + ".model", output_prefix + ".model")
    finally:
        for p in (tmp_prefix, tmp_prefix + ".model", tmp_prefix + ".vocab"):
            if os.path.exists(p):
                os.unlink(p)
    report.sentences = counter.n
    return output_prefix + ".model", report


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="JSONL/Parquet files, globs, folders or plain text files")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--json-keys", nargs="+", default=["text"], help="record keys holding the text")
    p.add_argument("--input-sentence-size", type=int, default=200_000,
                   help="at most this many training sentences (randomly sampled), caps time and memory")
    p.add_argument("--num-threads", type=int, default=os.cpu_count() or 1, help="SentencePiece trainer threads")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed record or damaged shard")
    args = p.parse_args(argv)
    if args.vocab_size < len(special_tokens.SPECIAL_TOKENS) + 3 + 256:
        p.error(f"--vocab-size {args.vocab_size} is too small: the 3 control pieces, "
                f"{len(special_tokens.SPECIAL_TOKENS)} special tokens and 256 byte pieces need "
                f"{len(special_tokens.SPECIAL_TOKENS) + 3 + 256}")
    t0 = time.time()
    with folders_removed_on_failure(args.output_prefix):
        model, report = train_tokenizer(
            args.input, args.output_prefix, args.vocab_size, args.json_keys, args.input_sentence_size,
            args.num_threads, strict=args.strict, on_damaged=lambda d: warn(f"damaged shard {d.describe()}"),
            log=lambda s: print(s, file=sys.stderr, flush=True))
    from megasnow.data.tokenizer import load_tokenizer

    tok = load_tokenizer(model)
    secs = time.time() - t0
    short = vocab_shortfall(args.vocab_size, tok.vocab_size, report.sentences >= args.input_sentence_size)
    if short:
        warn(short)
    print(f"wrote {model} and {args.output_prefix}.vocab (vocab {tok.vocab_size:,}, end of document "
          f"{tok.id_to_token(tok.eod_id)!r} = id {tok.eod_id}) in {format_duration(secs)}: {report.records:,} "
          f"records from {report.files} file(s), {report.sentences:,} sentences "
          f"({format_rate(report.sentences, secs, 'sentences')})")
    print(f"  skipped {report.skips.total:,} record(s); {len(report.damaged)} damaged shard(s)")
    for example in report.skips.examples:
        print(f"    at {example}")
    for d in report.damaged:
        print(f"    {d.describe()}")
    if short:
        print(f"  {short}")


def vocab_shortfall(requested, got, capped=False):
    """The warning for a vocabulary smaller than asked (SentencePiece with hard_vocab_limit=False stops merging when
    no pair occurs twice), or None when the size was reached. `capped`: --input-sentence-size cut the input."""
    if got >= requested:
        return None
    more = "raise --input-sentence-size (it capped the input) or add text" if capped else "add training text"
    return (f"--vocab-size {requested:,} was not reached: the vocabulary has {got:,} pieces because the input holds "
            f"too little distinct text for more merges; {more}, or ask for at most {got:,}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
