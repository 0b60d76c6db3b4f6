"""Annotator scoring throughput vs torch threads, on an idle machine and beside a CPU-bound neighbour.

Each measurement is a fresh child process (so OMP_* settings apply from the start) that loads the annotator (the
bundled all-MiniLM-L6-v2 + a linear head, the quickstart's 256-token window), scores one warm-up batch, then times
BatchedScorer.score_texts over the same real code files (the path `annotate.py score` runs). Conditions are
interleaved and their order rotated each repeat, so a change in the machine's load hits all of them alike; the
median and min-max over repeats are reported. The neighbour is `python -c 'while True: pass'`, started before the
child and killed after it: one busy core, as a second user's job would be. Results: benchmarks/results/annotate_throughput.md.

  python benchmarks/annotate_threads.py --files 40 --repeats 3 --markdown
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONDITIONS = {  # name: (threads, extra environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def child(args):
    """Runs in the measured process: load, warm up, time the scoring; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from annotate_throughput import sample_files

    from megasnow.quality.annotator import build_annotator
    from megasnow.quality.score import BatchedScorer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = sample_files(args.files, seed=0, max_chars=args.max_chars)
    scorer = BatchedScorer(build_annotator(max_length=args.max_length).eval())
    scorer.score_texts(texts[:2])  # warm-up: first-call allocations and kernel choice
    start, cpu = time.perf_counter(), time.process_time()
    scores, token_lists = scorer.score_texts(texts)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"files": len(texts), "tokens": int(sum(len(t) for t in token_lists)), "seconds": wall,
                      "cpu_seconds": cpu, "threads": torch.get_num_threads()}))


def measure(args, name, busy):
    threads, extra = CONDITIONS[name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(threads), "--files", str(args.files),
           "--max-length", str(args.max_length), "--max-chars", str(args.max_chars)]
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    result = json.loads(out.strip().splitlines()[-1])
    result["load1"] = os.getloadavg()[0]
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=40, help="code files scored per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-length", type=int, default=256, help="annotator window (the quickstart's)")
    p.add_argument("--max-chars", type=int, default=8000, help="files cut to this many characters")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--json", default=None, help="also write the raw measurements here")
    p.add_argument("--markdown", action="store_true", help="print the results table as markdown")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    cases = [(name, busy) for busy in (False, True) for name in args.conditions]
    runs = {c: [] for c in cases}
    print(f"start: load average {os.getloadavg()}", flush=True)
    for r in range(args.repeats):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            res = measure(args, *case)
            runs[case].append(res)
            print(f"repeat {r}: {case[0]:<36} {'busy neighbour' if case[1] else 'idle':<15} "
                  f"{res['files'] / res['seconds']:6.2f} files/s  (cpu {res['cpu_seconds']:.1f} s / wall "
                  f"{res['seconds']:.1f} s, load {res['load1']:.2f})", flush=True)
    print(f"end: load average {os.getloadavg()}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"condition": c[0], "neighbour": c[1], **r} for c, rs in runs.items() for r in rs], f, indent=1)
    base = {busy: statistics.median(r["files"] / r["seconds"] for r in runs[("1 thread", busy)])
            for busy in (False, True) if ("1 thread", busy) in runs}
    lines = ["| condition | neighbour | files/s (median) | min-max | vs 1 thread, same neighbour | load (1 min) |",
             "|---|---|---:|---:|---:|---:|"]
    for (name, busy), rs in runs.items():
        rates = [r["files"] / r["seconds"] for r in rs]
        med = statistics.median(rates)
        ratio = f"{med / base[busy]:.2f}x" if busy in base else "-"
        loads = [r["load1"] for r in rs]
        lines.append(f"| {name} | {'1 busy loop' if busy else 'none'} | {med:.2f} | {min(rates):.2f}-{max(rates):.2f} "
                     f"| {ratio} | {min(loads):.1f}-{max(loads):.1f} |")
    print("\n".join(lines) if args.markdown else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
