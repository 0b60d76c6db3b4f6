"""Scores from per-sample results: pass@k for base and plus tests, status counts, per-task records."""
from collections import Counter

from megasnow.eval.passk import pass_at_k, pass_at_k_table, unreported_ks

DEFAULT_KS = (1, 10, 100)


def score(benchmark, sample_results, ks=DEFAULT_KS):
    """(per-task records, summary dict). A sample counts for plus only if it passes base and plus (EvalPlus). A k
    with fewer samples than k for some task is left out of pass_at_k, the reason in "pass_at_k_not_reported"."""
    by_task = {}
    for rec in sample_results:
        by_task.setdefault(rec["task_id"], []).append(rec)
    per_task, n, base_c, plus_c = [], [], [], []
    has_plus = benchmark.has_plus
    status = {"base": Counter(), "plus": Counter()}
    exceptions = Counter()
    for task in benchmark.tasks:
        recs = sorted(by_task.get(task.task_id, []), key=lambda r: r["completion_id"])
        if not recs:
            continue
        bc = sum(r["base_status"] == "passed" for r in recs)
        pc = sum(r["base_status"] == "passed" and r.get("plus_status") == "passed" for r in recs) if task.has_plus \
            else None
        for r in recs:
            status["base"][r["base_status"]] += 1
            if task.has_plus:
                status["plus"][r.get("plus_status") or "not run"] += 1
            for s in ("base", "plus"):
                if r.get(f"{s}_exception"):
                    exceptions[r[f"{s}_exception"]] += 1
        n.append(len(recs))
        base_c.append(bc)
        entry = {"task_id": task.task_id, "n": len(recs), "base_correct": bc}
        if has_plus:
            plus_c.append(pc if pc is not None else bc)
            entry["plus_correct"] = pc
        for k in ks:
            if len(recs) >= k:
                entry[f"base_pass@{k}"] = pass_at_k(len(recs), bc, k)
                if pc is not None:
                    entry[f"plus_pass@{k}"] = pass_at_k(len(recs), pc, k)
        entry["samples"] = [{key: v for key, v in r.items() if key != "task_id"} for r in recs]
        per_task.append(entry)
    summary = {
        "benchmark": benchmark.name, "benchmark_path": benchmark.path, "schema": benchmark.schema,
        "benchmark_fingerprint": benchmark.fingerprint(), "tasks": len(per_task),
        "tasks_in_benchmark": len(benchmark.tasks), "samples": sum(n),
        "samples_per_task": {"min": min(n), "max": max(n)} if n else {},
        "pass_at_k": {"base": pass_at_k_table(n, base_c, ks)},
        "status_counts": {"base": dict(status["base"])},
        "exceptions": dict(exceptions.most_common(20)),
    }
    missing = unreported_ks(n, ks)
    if missing:  # why a pass@k asked for is not in pass_at_k (same n for base and plus)
        summary["pass_at_k_not_reported"] = missing
    if has_plus:
        summary["pass_at_k"]["plus"] = pass_at_k_table(n, plus_c, ks)
        summary["status_counts"]["plus"] = dict(status["plus"])
    return per_task, summary
