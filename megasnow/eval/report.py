"""Evaluation outputs: per-task results JSONL, summary JSON, a markdown table and the run's config, written
atomically into one folder."""
import contextlib
import json
import os

from megasnow.eval.signals import signals_held
from megasnow.utils.atomic import atomic_write_text, temporary_path

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
    partial = partial_note(summary)
    if partial:
        text += f"\n**Partial score**: {partial}\n"
    t = summary.get("too_long")
    if t:
        text += (f"\n{too_long_note(t)} (--skip-too-long): {', '.join(t['task_ids'][:20])}"
                 + (" ..." if len(t["task_ids"]) > 20 else "") + "\n")
    return text


def partial_note(summary):
    """The sentence for a score over only some of the tasks asked for (tasks whose generation failed; tasks without
    samples scored with --allow-missing); None for a full score."""
    failed, missing = summary.get("generation_failed_tasks"), summary.get("missing_tasks")
    scored = summary["tasks"]
    if failed:
        return (f"{failed} of {scored + failed} tasks failed to generate and are not scored: pass@k is over the "
                f"{scored} generated tasks only, not comparable with a full run (first error: "
                f"{summary.get('generation_first_error', '?')})")
    if missing:
        return (f"{missing} of {scored + missing} tasks have no sample and are not scored (--allow-missing): pass@k "
                f"is over the {scored} tasks with samples only, not comparable with a full run")
    return None


def too_long_note(t):
    """The sentence summary.md and evaluate.py's last line give for the tasks skipped by --skip-too-long
    (`t`: summary.json's "too_long")."""
    tasks = "1 task" if t["tasks"] == 1 else f"{t['tasks']} tasks"
    return f"{tasks} did not fit the model's context of {t.get('context_tokens') or '?'} tokens: scored as failed"


def write_report(out_dir, per_task, summary, config):
    """Write results.jsonl, summary.json, summary.md and config.json into out_dir, all four or none: each is
    written complete under a temporary name first, then the four are renamed into place with Ctrl-C/SIGTERM held
    back until the last rename (an interrupt leaves the previous four, or no file at all). Returns their paths."""
    texts = {RESULTS: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_task),
             SUMMARY: json.dumps(summary, indent=2, sort_keys=True) + "\n",
             TABLE: markdown_table(summary),
             CONFIG: json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"}
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in texts}
    temps = {}
    try:
        for name, text in texts.items():
            temps[name] = None
            temps[name] = temporary_path(paths[name])
            atomic_write_text(temps[name], text)  # (fsynced: the rename below is all that is left)
        with signals_held():
            for name in texts:
                os.replace(temps.pop(name), paths[name])
    finally:
        for tmp in temps.values():
            if tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    return paths
