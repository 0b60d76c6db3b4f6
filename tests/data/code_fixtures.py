"""Shared test inputs for the data tests: real source files from this machine and small tokenizers trained once.

Tokenizers are cached per test session (lru_cache) so every test module reuses the same trained files.
"""
import functools
import json
import os
import sys
import tempfile

CODE_ROOTS = [os.path.dirname(os.__file__), "/usr/lib/python3", "/usr/include", "/usr/lib/node_modules",
              os.path.join(os.path.dirname(os.__file__), "site-packages")]
CODE_SUFFIXES = (".py", ".h", ".c", ".js", ".ps1", ".cfg", ".txt")
# Files wanted per trait; CRLF files are rare on Linux (the stdlib has a few), so fewer of them.
QUOTA = {"tab": 10, "crlf": 3, "nonascii": 10, "blank_lines": 10, "space_runs": 10}


@functools.lru_cache(maxsize=None)
def real_code_files(max_files=200, max_bytes=60_000, max_visited=20_000):
    """(path, text) of real UTF-8 source files in a fixed order: up to QUOTA[trait] each with tabs, CRLF, non-ASCII, blank
    lines and runs of spaces, topped up with other files. Stops early so collection stays fast."""
    picked, plain = [], []
    quota = {"tab": 0, "crlf": 0, "nonascii": 0, "blank_lines": 0, "space_runs": 0}
    visited = 0
    for root in CODE_ROOTS:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                if not name.endswith(CODE_SUFFIXES):
                    continue
                visited += 1
                path = os.path.join(folder, name)
                try:
                    if not 0 < os.path.getsize(path) <= max_bytes:
                        continue
                    with open(path, "rb") as f:
                        text = f.read().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                traits = code_traits(text)
                if any(traits[t] and quota[t] < QUOTA[t] for t in traits):
                    for t in traits:
                        quota[t] += traits[t]
                    picked.append((path, text))
                elif len(plain) < max_files:
                    plain.append((path, text))
                full = all(quota[t] >= QUOTA[t] for t in quota) and len(picked) + len(plain) >= max_files
                if full or visited >= max_visited:
                    return tuple(picked + plain[: max_files - len(picked)])
    return tuple(picked + plain[: max_files - len(picked)])


def code_traits(text):
    return {
        "tab": "\t" in text,
        "crlf": "\r\n" in text,
        "nonascii": any(ord(c) > 127 for c in text),
        "blank_lines": "\n\n\n" in text or "\n\n" in text,
        "space_runs": "        " in text,
    }


@functools.lru_cache(maxsize=None)
def _workdir():
    return tempfile.mkdtemp(prefix="megasnow-data-tests-")


@functools.lru_cache(maxsize=None)
def code_jsonl(n_docs=300):
    """A JSONL file of real code documents ({"text", "path"})."""
    path = os.path.join(_workdir(), f"code_{n_docs}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for p, text in real_code_files()[:n_docs]:
            f.write(json.dumps({"text": text, "path": p}) + "\n")
    return path


@functools.lru_cache(maxsize=None)
def sentencepiece_model(vocab_size=1200):
    """A small code SentencePiece model trained with tools/train_tokenizer.py on real code."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    from train_tokenizer import train_tokenizer

    prefix = os.path.join(_workdir(), f"sp{vocab_size}")
    model, _ = train_tokenizer([code_jsonl()], prefix, vocab_size, input_sentence_size=20_000, num_threads=2)
    return model


@functools.lru_cache(maxsize=None)
def hf_tokenizer_json(vocab_size=1200):
    """A small byte-level BPE tokenizer.json (HF tokenizers) with the megasnow special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from megasnow.data.special_tokens import SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((t for _, t in real_code_files()[:200]), trainer=trainer)
    path = os.path.join(_workdir(), "tokenizer.json")
    tok.save(path)
    return path
