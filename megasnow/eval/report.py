"""Evaluation outputs: per-task results JSONL, summary JSON, a markdown table and the run's config, written
atomically into one folder."""
import json
import os

from megasnow.utils.atomic import atomic_write_text

RESULTS, SUMMARY, TABLE, CONFIG = "results.jsonl", "summary.json", "summary.md", "config.json"


def markdown_table(summary):
    """One row per benchmark run: pass@k for base (and plus) tests, the benchmark-solution loss when measured."""
    ks = list(summary["pass_at_k"]["base"])
    plus = "plus" in summary["pass_at_k"]
    head = ["benchmark", "model", "prompt", "tasks", "samples/task"]
    head += [f"base {k}" for k in ks] + ([f"plus {k}" for k in ks] if plus else [])
    head += ["solution loss"]
    spt = summary.get("samples_per_task", {})
    row = [summary["benchmark"], summary.get("model", ""), summary.get("prompt_style", ""), str(summary["tasks"]),
           str(spt.get("min", "")) if spt.get("min") == spt.get("max") else f"{spt.get('min')}-{spt.get('max')}"]
    row += [f"{100 * summary['pass_at_k']['base'][k]:.1f}" for k in ks]
    if plus:
        row += [f"{100 * summary['pass_at_k']['plus'].get(k, float('nan')):.1f}" for k in ks]
    loss = summary.get("solution_loss")
    row += [f"{loss['loss']:.4f}" if loss else ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"]
    counts = summary.get("status_counts", {})
    notes = [f"statuses ({s}): " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for s, c in counts.items()]
    text = "\n".join(lines) + "\n\npass@k in %. " + "; ".join(notes) + "\n"
    t = summary.get("too_long")
    if t:
        text += (f"\n{too_long_note(t)} (--skip-too-long): {', '.join(t['task_ids'][:20])}"
                 + (" ..." if len(t["task_ids"]) > 20 else "") + "\n")
    return text


def too_long_note(t):
    """The sentence summary.md and evaluate.py's last line give for the tasks skipped by --skip-too-long
    (`t`: summary.json's "too_long")."""
    tasks = "1 task" if t["tasks"] == 1 else f"{t['tasks']} tasks"
    return f"{tasks} did not fit the model's context of {t.get('context_tokens') or '?'} tokens: scored as failed"


def write_report(out_dir, per_task, summary, config):
    """Write results.jsonl, summary.json, summary.md and config.json into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in (RESULTS, SUMMARY, TABLE, CONFIG)}
    atomic_write_text(paths[RESULTS], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_task))
    atomic_write_text(paths[SUMMARY], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(paths[TABLE], markdown_table(summary))
    atomic_write_text(paths[CONFIG], json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return paths
