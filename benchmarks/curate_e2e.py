"""End-to-end curation throughput (MB per CPU-second = per core, and MB/s wall) on real code, per stage, and the
Ray executor's scaling from 1 to 2 workers.

python benchmarks/curate_e2e.py [--corpus-mb 220] [--ray-mb 220] [--pieces 16] [--repeats 1]
Uses the corpus of benchmarks/minhash.py (.bench_data/code_corpus); outputs go to .bench_data/e2e_runs/. CPU time
is that of this process and all its descendants (pool workers, Ray's raylet and workers), read from /proc: the
machine is shared, so `cores_used` (CPU / wall) shows how much of its 2 cores a run actually got.
"""
import argparse
import json
import os
import threading
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from minhash import build_corpus  # noqa: E402

from megasnow.config import load_config  # noqa: E402
from megasnow.curate.config import CurateConfig  # noqa: E402
from megasnow.curate.pipeline import run_pipeline  # noqa: E402

RUNS = os.path.join(ROOT, ".bench_data", "e2e_runs")


def subset_shards(shards, mb, pieces, dest):
    """The first `mb` MB of the corpus split into `pieces` equal JSONL shards (so 2 workers have work to share)."""
    if os.path.isdir(dest):
        return dest
    lines, total = [], 0
    for s in shards:
        with open(s, encoding="utf-8") as f:
            for line in f:
                lines.append(line)
                total += len(line)
                if total >= mb * 1e6:
                    break
        if total >= mb * 1e6:
            break
    os.makedirs(dest)
    per = (len(lines) + pieces - 1) // pieces
    for i in range(pieces):
        with open(os.path.join(dest, f"part-{i:03d}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(lines[i * per:(i + 1) * per])
    return dest


class TreeCpu:
    """CPU seconds of this process and all its descendants (pool workers, forkserver, Ray's raylet and workers),
    sampled from /proc every `period` s; a process's last sample counts (a short-lived one may lose < period)."""

    def __init__(self, period=0.2):
        self.period, self.last, self.base = period, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _snapshot():
        stats = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
                except (OSError, IndexError, ValueError):
                    pass  # the process ended meanwhile
        mine, todo = {}, [os.getpid()]
        children = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        while todo:
            pid = todo.pop()
            if pid in stats:
                mine[pid] = stats[pid][1]
            todo += children.get(pid, [])
        return mine

    def _run(self):
        while not self._stop.wait(self.period):
            self.last.update(self._snapshot())

    def __enter__(self):
        self.base = self._snapshot()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.last.update(self._snapshot())
        self.seconds = sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


def curate(inputs, name, overrides, ray_workers=0):
    """One fresh run. With ray_workers, Ray is started first (timed apart) so that the run's wall time is the
    pipeline's own; the pipeline then uses that Ray instance and leaves it to us to stop."""
    out = os.path.join(RUNS, name)
    shutil.rmtree(out, ignore_errors=True)
    ray_start = None
    if ray_workers:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=ray_workers, include_dashboard=False, object_store_memory=100 << 20,
                 configure_logging=False)
        ray_start = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    try:
        with TreeCpu() as tree:
            stats = run_pipeline(inputs, out, load_config(CurateConfig, overrides=overrides))
    finally:
        if ray_workers:
            ray.shutdown()
    wall, cpu = time.perf_counter() - t0, tree.seconds
    mb_in = stats["stages"]["ingest"]["all"]["bytes_in"] / 1e6
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores_used": round(cpu / wall, 2),
            "mb_in": round(mb_in, 1),
            "mb_per_s": round(mb_in / wall, 2), "mb_per_cpu_s": round(mb_in / cpu, 2),
            "load_average": os.getloadavg()[0], "stage_seconds": stats["seconds"],
            "files_in": stats["stages"]["ingest"]["all"]["files_in"],
            "documents": stats["stages"]["documents"]["all"]["files_out"],
            "files_kept": stats["stages"]["near_dedup"]["all"]["files_out"], "near": stats["dedup"]["near"],
            "ray_start_s": ray_start}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-mb", type=float, default=220)
    p.add_argument("--ray-mb", type=float, default=220, help="MB of the corpus for the 1- vs 2-worker runs")
    p.add_argument("--pieces", type=int, default=16, help="equal shards it is cut into (work for 2 workers)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "curate_e2e.json"))
    args = p.parse_args()
    shards = build_corpus(args.corpus_mb)
    res = {}
    if not args.skip_full:
        res["full_local_1_worker"] = curate(shards, "full", ["workers=1"])
    small = subset_shards(shards, args.ray_mb, args.pieces,
                          os.path.join(ROOT, ".bench_data", f"e2e_subset_{args.ray_mb:g}mb_{args.pieces}"))
    for name, ov, ray_workers in [("subset_local_1", ["workers=1"], 0), ("subset_local_2", ["workers=2"], 0),
                                  ("subset_ray_1", ["executor=ray", "workers=1"], 1),
                                  ("subset_ray_2", ["executor=ray", "workers=2"], 2)]:
        runs = [curate([small], name, ov, ray_workers) for _ in range(args.repeats)]
        res[name] = min(runs, key=lambda r: r["wall_s"]) if len(runs) > 1 else runs[0]
        res[name]["wall_s_median"] = round(statistics.median(r["wall_s"] for r in runs), 2)
    res["ray_scaling_1_to_2"] = round(res["subset_ray_1"]["wall_s"] / res["subset_ray_2"]["wall_s"], 2)
    res["local_scaling_1_to_2"] = round(res["subset_local_1"]["wall_s"] / res["subset_local_2"]["wall_s"], 2)
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
