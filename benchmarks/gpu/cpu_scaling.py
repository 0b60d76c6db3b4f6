"""CPU scaling on a many-core machine: binarization (tools/preprocess_data.py) with 1..N workers against the
single-thread SentencePiece limit on the same text, Megatron-LM's own tools/preprocess_data.py beside it when its
source was carried (same flags, so its .bin/.idx must be byte-identical to megasnow's), and the MinHash signature
stage at 1..N threads.

The limit is SentencePiece's own encode of the corpus, preloaded, one thread (benchmarks/binarize.py's
`encode_limit`). A worker count is "at the limit" when its MB/s reaches workers x the limit's MB/s (vs_limit 1.0;
the binarization target is >= 0.9). Runs with several workers read the corpus repeated (same bytes per token, a
run long enough that start-up does not dominate); the limit and the 1-worker run read it once.

    python -m benchmarks.gpu.cpu_scaling --jsonl CODE.jsonl --tokenizer CODE.model --out OUT.json \
        [--workers 1 4 8 16] [--threads 1 2 4 8 16] [--megatron-lm DIR]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks.binarize import encode_limit, run_measured
from benchmarks.gpu.data import repeated
from benchmarks.minhash import megasnow_signatures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_TYPE = "GPTSentencePieceTokenizer"  # both tools, same flags: Megatron's usual type for a .model


def log(msg):
    print(f"[cpu] {msg}", flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def identical_output(ours, theirs):
    """Whether two datasets' .bin and .idx are byte-identical (cmp), e.g. megasnow's and Megatron-LM's
    preprocess_data.py with the same flags: for the SentencePiece tokenizer types both write encode_as_ids(text)
    and, with --append-eod, the model's eos (`</s>`, id 2 for megasnow's tokenizers) after each document
    (docs/data.md, "What each --tokenizer-type writes")."""
    import filecmp

    return all(filecmp.cmp(ours + ext, theirs + ext, shallow=False) for ext in (".bin", ".idx"))


def binarization(args, out_dir):
    docs = sum(1 for _ in open(args.jsonl, "rb"))
    wall, cpu, nbytes, _ = encode_limit(args.jsonl, args.tokenizer, 1)
    limit = nbytes / wall / 1e6
    log(f"SentencePiece encode, 1 thread (the limit): {limit:.2f} MB/s ({nbytes / 1e6:.1f} MB, {docs} docs, "
        f"{wall:.1f}s)")
    rows = [dict(tool="sp-encode-1-thread", workers=1, input_mb=round(nbytes / 1e6, 2), wall_s=round(wall, 3),
                 text_mb_s=round(limit, 3), cpu_s=round(cpu, 2), vs_limit=1.0)]
    big = repeated(args.jsonl, args.repeat) if args.repeat > 1 else args.jsonl
    for w in args.workers:
        src, times = (args.jsonl, 1) if w == 1 else (big, args.repeat)
        prefix = os.path.join(out_dir, f"ours{w}")
        # Megatron's flags (below), so that the two outputs can be compared byte for byte
        cmd = [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input", src, "--output-prefix",
               prefix, "--tokenizer-type", TOKENIZER_TYPE, "--tokenizer-model", args.tokenizer, "--workers", str(w),
               "--append-eod", "--no-progress"]
        wall, cpu, rss = run_measured(cmd)
        mbs = times * nbytes / wall / 1e6
        rows.append(dict(tool="megasnow", workers=w, input=src, input_mb=round(times * nbytes / 1e6, 2),
                         wall_s=round(wall, 3),
                         text_mb_s=round(mbs, 3), cpu_s=round(cpu, 2), peak_rss_mb=round(rss),
                         vs_limit=round(mbs / (w * limit), 3)))
        log(f"megasnow preprocess_data, {w:2d} workers: {mbs:7.2f} MB/s = {mbs / (w * limit):.2f} x (workers x limit)"
            f"  ({wall:.1f}s, CPU {cpu:.1f}s, peak RSS {rss:.0f} MB)")
    meg = os.path.join(args.megatron_lm or "", "tools", "preprocess_data.py")
    if args.megatron_lm and os.path.exists(meg):
        for w in args.megatron_workers:
            prefix = os.path.join(out_dir, f"megatron{w}")
            cmd = [sys.executable, "-W", "ignore", meg, "--input", big, "--output-prefix", prefix,
                   "--tokenizer-type", TOKENIZER_TYPE, "--tokenizer-model", args.tokenizer,
                   "--workers", str(w), "--append-eod", "--log-interval", "1000000000"]
            env_path = os.environ.get("PYTHONPATH", "")
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (args.megatron_lm, env_path) if p)
            try:
                wall, cpu, rss = run_measured(cmd)
            except RuntimeError as e:
                log(f"Megatron-LM preprocess_data.py, {w} workers: FAILED {str(e)[-800:]}")
                rows.append(dict(tool="megatron-lm", workers=w, error=str(e)[-800:]))
                continue
            finally:
                os.environ["PYTHONPATH"] = env_path
            mbs = args.repeat * nbytes / wall / 1e6
            ours = next((r for r in rows if r["tool"] == "megasnow" and r["workers"] == w), None)
            same = (identical_output(os.path.join(out_dir, f"ours{w}_text_document"), prefix + "_text_document")
                    if ours and ours["input"] == big else None)  # None: no megasnow run on the same input
            rows.append(dict(tool="megatron-lm", workers=w, input_mb=round(args.repeat * nbytes / 1e6, 2),
                             wall_s=round(wall, 3), text_mb_s=round(mbs, 3), cpu_s=round(cpu, 2),
                             peak_rss_mb=round(rss), vs_limit=round(mbs / (w * limit), 3),
                             megasnow_speedup=round(ours["text_mb_s"] / mbs, 3) if ours else None,
                             tokenizer_type=TOKENIZER_TYPE, identical_output=same))
            log(f"Megatron-LM preprocess_data.py, {w:2d} workers: {mbs:7.2f} MB/s ({wall:.1f}s incl. its imports); "
                f"megasnow {rows[-1]['megasnow_speedup']}x; .bin/.idx byte-identical: {same}")
    else:
        log("Megatron-LM's preprocess_data.py: source not carried (scripts/prepare_gpu_wheels.sh puts it in .whl/)")
    return rows, limit


def minhash(args):
    texts = [json.loads(line)["text"] for line in open(args.jsonl, encoding="utf-8")]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    rows, base = [], None
    for n in args.threads:
        walls = []
        for _ in range(args.minhash_repeats):
            t0 = time.perf_counter()
            megasnow_signatures(texts, threads=n)
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        base = base or wall
        rows.append(dict(threads=n, mb=round(mb, 2), wall_s=round(wall, 4), mb_s=round(mb / wall, 2),
                         speedup=round(base / wall, 2), efficiency=round(base / wall / n, 3)))
        log(f"MinHash signatures (256 perm, 5-grams), {n:2d} threads: {mb / wall:8.1f} MB/s, {base / wall:5.2f}x "
            f"of 1 thread (median of {args.minhash_repeats})")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jsonl", required=True, help="code corpus ({'text': ...} per line)")
    p.add_argument("--tokenizer", required=True, help="SentencePiece .model")
    p.add_argument("--out", required=True, help="results as JSON")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--repeat", type=int, default=4, help="multi-worker runs read the corpus this many times over")
    p.add_argument("--megatron-lm", default=None, help="a Megatron-LM source tree (tools/preprocess_data.py)")
    p.add_argument("--megatron-workers", type=int, nargs="+", default=[16])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="MinHash threads")
    p.add_argument("--minhash-repeats", type=int, default=3)
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    for name in ("workers", "megatron_workers", "threads"):
        kept = [n for n in getattr(args, name) if n <= cores]
        if len(kept) < len(getattr(args, name)):
            log(f"--{name.replace('_', '-')}: {getattr(args, name)} capped to this machine's {cores} cores: {kept}")
        setattr(args, name, kept)
    res = {"check": "cpu scaling", "cpu": cpu_model(), "cores": cores, "load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="gpu-suite-binarize-") as out_dir:
        res["binarize"], res["limit_mb_s"] = binarization(args, out_dir)
    res["minhash"] = minhash(args)
    res["load_average_end"] = os.getloadavg()[0]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {args.out} (load average {res['load_average_start']:.1f} -> {res['load_average_end']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
