#!/usr/bin/env python
"""Train a SentencePiece BPE tokenizer for code with exact round trips (no normalization, byte fallback).

Usage: python tools/train_tokenizer.py --input data/*.jsonl --output-prefix tok/code --vocab-size 32000
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megasnow.data import special_tokens  # noqa: E402
from megasnow.utils.atomic import temporary_path  # noqa: E402
from megasnow.utils.records import SkipLog, expand_inputs, is_record_file, iter_records  # noqa: E402


def iter_documents(paths, json_keys, skips):
    """Texts from JSONL/Parquet records (each of json_keys) or whole plain-text files."""
    for path in paths:
        if is_record_file(path):
            for pos, rec in iter_records(path, skips=skips):
                for key in json_keys:
                    value = rec.get(key)
                    if isinstance(value, str):
                        yield value
                    else:
                        skips.add(f"missing or non-string key {key!r}", f"{path}:{pos}")
        else:
            with open(path, "rb") as f:
                raw = f.read()
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                skips.add("invalid UTF-8", path)


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


def train_tokenizer(inputs, output_prefix, vocab_size, json_keys=("text",), input_sentence_size=200_000,
                    num_threads=None, max_sentence_bytes=2048):
    """Train and write output_prefix.model / .vocab atomically; returns (model path, SkipLog)."""
    import sentencepiece as spm

    paths = expand_inputs(inputs)
    skips = SkipLog()
    sentences = iter_sentences(iter_documents(paths, list(json_keys), skips), max_sentence_bytes)
    opts = trainer_options(vocab_size, input_sentence_size, num_threads or os.cpu_count() or 1,
                           max_sentence_length=max_sentence_bytes * 2)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)) or ".", exist_ok=True)
    tmp_prefix = temporary_path(output_prefix + ".model")
    try:
        spm.SentencePieceTrainer.Train(sentence_iterator=sentences, model_prefix=tmp_prefix, **opts)
        os.replace(tmp_prefix + ".vocab", output_prefix + ".vocab")
        os.replace(tmp_prefix + ".model", output_prefix + ".model")
    finally:
        for p in (tmp_prefix, tmp_prefix + ".model", tmp_prefix + ".vocab"):
            if os.path.exists(p):
                os.unlink(p)
    return output_prefix + ".model", skips


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="JSONL/Parquet files, globs, folders or plain text files")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--input-sentence-size", type=int, default=200_000,
                   help="at most this many training sentences (randomly sampled), caps time and memory")
    p.add_argument("--num-threads", type=int, default=None)
    args = p.parse_args(argv)
    t0 = time.time()
    model, skips = train_tokenizer(args.input, args.output_prefix, args.vocab_size, args.json_keys,
                                   args.input_sentence_size, args.num_threads)
    from megasnow.data.tokenizer import load_tokenizer

    tok = load_tokenizer(model)
    print(f"wrote {model} (vocab {tok.vocab_size}, eod id {tok.eod_id}) in {time.time() - t0:.1f}s; "
          f"skipped {skips.total} records")
    for example in skips.examples:
        print(f"  skipped {example}")


if __name__ == "__main__":
    main()
