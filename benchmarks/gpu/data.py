"""Shared inputs of the GPU suite, built once per work folder: real code as JSONL, a SentencePiece tokenizer trained
on it, the same text repeated for the multi-worker runs, and its binarized tokens (for the precision run).

    python -m benchmarks.gpu.data --work DIR [--mb 32] [--vocab 32000]
"""
import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time

from benchmarks.code_corpus import DEFAULT_ROOTS, build_code_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"[data] {msg}", flush=True)


def corpus(work, mb):
    """(path, docs, text bytes) of about `mb` MB of this machine's source files (cached in WORK/data)."""
    path = os.path.join(work, "data", "code.jsonl")
    roots = DEFAULT_ROOTS + [sysconfig.get_paths()["purelib"]]  # a venv's packages are not under the stdlib
    t0 = time.perf_counter()
    docs, size = build_code_jsonl(path, int(mb * 1e6), roots=list(dict.fromkeys(roots)))
    if size < mb * 1e6:
        log(f"only {size / 1e6:.1f} MB of code found on this machine (asked for {mb} MB); using all of it")
    log(f"corpus {path}: {docs} files, {size / 1e6:.1f} MB of code text ({time.perf_counter() - t0:.1f}s)")
    return path, docs, size


def repeated(path, times):
    """PATH's records repeated `times` times (the same bytes per token, a longer run for many workers)."""
    out = f"{path[:-len('.jsonl')]}_x{times}.jsonl"
    if not os.path.exists(out) or os.path.getsize(out) != times * os.path.getsize(path):
        with open(path, "rb") as f:
            text = f.read()
        with open(out + ".partial", "wb") as g:
            for _ in range(times):
                g.write(text)
        os.replace(out + ".partial", out)
    return out


def tokenizer(work, jsonl, vocab, sentences):
    """A SentencePiece BPE model trained on the corpus with tools/train_tokenizer.py (cached)."""
    prefix = os.path.join(work, "data", f"code{vocab}")
    if not os.path.exists(prefix + ".model"):
        t0 = time.perf_counter()
        cmd = [sys.executable, os.path.join(ROOT, "tools", "train_tokenizer.py"), "--input", jsonl,
               "--output-prefix", prefix, "--vocab-size", str(vocab), "--input-sentence-size", str(sentences),
               "--num-threads", str(os.cpu_count() or 1)]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        log(f"tokenizer {prefix}.model: vocab {vocab}, trained in {time.perf_counter() - t0:.1f}s")
    return prefix + ".model"


def binarized(work, jsonl, model):
    """The corpus as a Megatron indexed dataset (tools/preprocess_data.py; cached); returns the prefix."""
    prefix = os.path.join(work, "data", "code")
    dataset = prefix + "_text_document"
    if not os.path.exists(dataset + ".idx"):
        cmd = [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input", jsonl, "--output-prefix",
               prefix, "--tokenizer-model", model, "--workers", str(os.cpu_count() or 1), "--append-eod",
               "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        log(f"binarized {dataset}.bin/.idx")
    return dataset


def prepare(work, mb, vocab, sentences):
    """Everything at once; returns a dict of paths (also written to WORK/data/inputs.json)."""
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    jsonl, docs, size = corpus(work, mb)
    model = tokenizer(work, jsonl, vocab, sentences)
    info = {"jsonl": jsonl, "docs": docs, "text_bytes": size, "tokenizer": model, "vocab": vocab,
            "dataset": binarized(work, jsonl, model)}
    with open(os.path.join(work, "data", "inputs.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="the suite's work folder (data goes to WORK/data)")
    p.add_argument("--mb", type=float, default=32, help="MB of code text")
    p.add_argument("--vocab", type=int, default=32000, help="tokenizer vocabulary")
    p.add_argument("--sentences", type=int, default=200000, help="tokenizer training lines (sampled)")
    args = p.parse_args(argv)
    print(json.dumps(prepare(args.work, args.mb, args.vocab, args.sentences), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
