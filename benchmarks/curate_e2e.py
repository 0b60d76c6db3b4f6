"""End-to-end curation throughput (MB/s per core) on real code, per stage, and Ray scaling from 1 to 2 workers.

python benchmarks/curate_e2e.py [--corpus-mb 220] [--ray-mb 48] [--repeats 1]
Uses the corpus of benchmarks/minhash.py (.bench_data/code_corpus); outputs go to .bench_data/e2e_runs/.
"""
import argparse
import json
import os
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


def curate(inputs, name, overrides):
    out = os.path.join(RUNS, name)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    stats = run_pipeline(inputs, out, load_config(CurateConfig, overrides=overrides))
    wall = time.perf_counter() - t0
    mb_in = stats["stages"]["ingest"]["all"]["bytes_in"] / 1e6
    return {"wall_s": wall, "mb_in": mb_in, "mb_per_s": mb_in / wall, "stage_seconds": stats["seconds"],
            "files_in": stats["stages"]["ingest"]["all"]["files_in"],
            "documents": stats["stages"]["documents"]["all"]["files_out"],
            "files_kept": stats["stages"]["near_dedup"]["all"]["files_out"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-mb", type=float, default=220)
    p.add_argument("--ray-mb", type=float, default=48)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "curate_e2e.json"))
    args = p.parse_args()
    shards = build_corpus(args.corpus_mb)
    res = {}
    if not args.skip_full:
        res["full_local_1_worker"] = curate(shards, "full", ["workers=1"])
    small = subset_shards(shards, args.ray_mb, 8, os.path.join(ROOT, ".bench_data", f"e2e_subset_{args.ray_mb:g}mb"))
    for name, ov in [("subset_local_1", ["workers=1"]), ("subset_local_2", ["workers=2"]),
                     ("subset_ray_1", ["executor=ray", "workers=1"]), ("subset_ray_2", ["executor=ray", "workers=2"])]:
        runs = [curate([small], name, ov) for _ in range(args.repeats)]
        res[name] = min(runs, key=lambda r: r["wall_s"]) if len(runs) > 1 else runs[0]
        res[name]["wall_s_median"] = statistics.median(r["wall_s"] for r in runs)
    res["ray_scaling_1_to_2"] = res["subset_ray_1"]["wall_s"] / res["subset_ray_2"]["wall_s"]
    res["local_scaling_1_to_2"] = res["subset_local_1"]["wall_s"] / res["subset_local_2"]["wall_s"]
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
