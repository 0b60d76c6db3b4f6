#!/usr/bin/env python
"""Binarization benchmark: megasnow's preprocess_data.py vs Megatron's structure vs the SentencePiece encode limit.

Usage: python benchmarks/binarize.py [--mb 110] [--workers 1 2] [--repeats 1] [--out benchmarks/results/binarize.csv]
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.code_corpus import build_code_jsonl, train_code_tokenizer  # noqa: E402


def run_measured(cmd):
    """Run a command; return (wall s, CPU s user+sys, peak RSS MB of the largest process) from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    stderr = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{stderr.decode()[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def encode_limit(jsonl, model, threads):
    """SentencePiece encode of the same texts, in-process, all texts preloaded: (wall s, CPU s, text bytes, docs)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    texts = []
    with open(jsonl, "rb") as f:
        for line in f:
            texts.append(json.loads(line)["text"].encode("utf-8"))
    nbytes = sum(len(t) for t in texts)
    c0, t0 = time.process_time(), time.perf_counter()
    sp.Encode(texts, out_type="numpy", num_threads=threads)
    return time.perf_counter() - t0, time.process_time() - c0, nbytes, len(texts)


def build_big_jsonl(path, gb, code_jsonl):
    """A multi-GB JSONL for the memory check: the real code corpus repeated until the size is reached, so every
    byte is real code that is parsed and tokenized (repeats change nothing for a streaming binarizer's memory)."""
    target = int(gb * 1e9)
    with open(code_jsonl, "rb") as f:
        corpus = f.read()
    size = 0
    with open(path, "wb") as out:
        while size < target:
            out.write(corpus)
            size += len(corpus)
    return size


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=110, help="corpus size in MB of code text")
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".bench_data"))
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "binarize.csv"))
    p.add_argument("--memory-gb", type=float, default=0,
                   help="also binarize a generated input of this many GB (2 workers) and report peak RSS")
    args = p.parse_args()

    jsonl = os.path.join(args.data_dir, "code.jsonl")
    docs, text_bytes = build_code_jsonl(jsonl, int(args.mb * 1e6))
    model = os.path.join(args.data_dir, f"code{args.vocab_size // 1000}k.model")
    train_code_tokenizer(jsonl, model, args.vocab_size, ROOT)
    print(f"corpus: {jsonl}: {docs} docs, {text_bytes / 1e6:.1f} MB of code text "
          f"({os.path.getsize(jsonl) / 1e6:.1f} MB JSONL); tokenizer {model}", flush=True)

    rows = []
    out_dir = tempfile.mkdtemp(prefix="bench-binarize-")
    for rep in range(args.repeats):
        wall, cpu, nbytes, ndocs = encode_limit(jsonl, model, 1)
        rows.append(dict(rep=rep, tool="sp-encode-1-thread", workers=1, wall=wall, cpu=cpu, rss_mb=float("nan")))
        print(f"[{rep}] SentencePiece encode, 1 thread: {nbytes / wall / 1e6:.3f} MB/s", flush=True)
        for w in args.workers:
            ours = [sys.executable, "tools/preprocess_data.py", "--input", jsonl, "--output-prefix",
                    os.path.join(out_dir, f"ours{w}"), "--tokenizer-model", model, "--workers", str(w),
                    "--append-eod", "--no-progress"]
            meg = [sys.executable, "benchmarks/megatron_preprocess_baseline.py", "--input", jsonl,
                   "--output-prefix", os.path.join(out_dir, f"meg{w}"), "--tokenizer-model", model,
                   "--workers", str(w), "--append-eod", "--log-interval", "100000"]
            for tool, cmd in (("megasnow", ours), ("megatron", meg)):
                wall, cpu, rss = run_measured(cmd)
                rows.append(dict(rep=rep, tool=tool, workers=w, wall=wall, cpu=cpu, rss_mb=rss))
                print(f"[{rep}] {tool} workers={w}: {wall:.1f}s wall, {nbytes / wall / 1e6:.3f} MB/s, "
                      f"{ndocs / wall:.0f} docs/s, CPU {cpu:.1f}s, peak RSS {rss:.0f} MB", flush=True)
            same = all(open(os.path.join(out_dir, f"{t}{w}_text_document{e}"), "rb").read()
                       == open(os.path.join(out_dir, f"ours{w}_text_document{e}"), "rb").read()
                       for t in ("meg",) for e in (".bin", ".idx"))
            print(f"[{rep}] outputs byte-identical to Megatron's: {same}", flush=True)
            for name in os.listdir(out_dir):
                os.unlink(os.path.join(out_dir, name))

    summary = []
    if args.repeats > 0:
        print(f"\nmedians over {args.repeats} repeat(s); text {nbytes / 1e6:.1f} MB, {ndocs} docs")
        med = {}
        for key in sorted({(r["tool"], r["workers"]) for r in rows}):
            sel = [r for r in rows if (r["tool"], r["workers"]) == key]
            med[key] = {k: statistics.median(r[k] for r in sel) for k in ("wall", "cpu", "rss_mb")}
        limit = nbytes / med[("sp-encode-1-thread", 1)]["wall"]
        limit_cpu = med[("sp-encode-1-thread", 1)]["cpu"]
        for (tool, w), m in med.items():
            mbs = nbytes / m["wall"] / 1e6
            line = dict(tool=tool, workers=w, wall_s=round(m["wall"], 2), text_MB_s=round(mbs, 3),
                        docs_s=round(ndocs / m["wall"], 1), cpu_s=round(m["cpu"], 1),
                        peak_rss_MB=round(m["rss_mb"], 0), vs_limit=round(mbs * 1e6 / (w * limit), 3),
                        encode_cpu_share=round(limit_cpu / m["cpu"], 3))
            summary.append(line)
            print(line)
        for w in args.workers:
            ours, meg = med[("megasnow", w)], med[("megatron", w)]
            print(f"workers={w}: megasnow / megatron speed = {meg['wall'] / ours['wall']:.2f}x")
    if args.memory_gb:
        big = os.path.join(args.data_dir, "big.jsonl")
        size = build_big_jsonl(big, args.memory_gb, jsonl)
        cmd = [sys.executable, "tools/preprocess_data.py", "--input", big, "--output-prefix",
               os.path.join(out_dir, "big"), "--tokenizer-model", model, "--workers", "2", "--append-eod",
               "--no-progress"]
        wall, cpu, rss = run_measured(cmd)
        print(f"memory check: {size / 1e9:.2f} GB input, megasnow workers=2: {wall:.1f}s wall, "
              f"{size / wall / 1e6:.1f} MB/s of JSONL, peak RSS {rss:.0f} MB", flush=True)
        summary.append(dict(tool="megasnow-multi-GB-input", workers=2, wall_s=round(wall, 2),
                            text_MB_s=float("nan"), docs_s=float("nan"), cpu_s=round(cpu, 1),
                            peak_rss_MB=round(rss, 0), vs_limit=float("nan"), encode_cpu_share=float("nan")))
        os.unlink(big)
        for name in os.listdir(out_dir):
            os.unlink(os.path.join(out_dir, name))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["tool", "workers", "wall_s", "text_MB_s", "docs_s", "cpu_s", "peak_rss_MB",
                                           "vs_limit", "encode_cpu_share"])
        wr.writeheader()
        wr.writerows(summary)


if __name__ == "__main__":
    main()
