"""Per-language top-fraction selection: keep the phase-1 language mix (by tokens) until a token budget.

Pass 1 (per shard, cached + resumable): join each document shard with its scores file and count
every scored document's tokens with the project tokenizer. Then, with f = budget / total tokens,
each language takes its best-scored documents until it holds f of its own phase-1 tokens (the
document that crosses that line is included), so the budget is met and every language keeps its
share up to one document. Pass 2 writes the selected documents as JSONL shards for
tools/preprocess_data.py. Repetition (the paper's 4 x 12.5B) belongs in the phase-2 blend of the trainer
config (`blend: [{path: PREFIX, repeat: 4}]`), never in copies of the data.
"""
import json
import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np

from megasnow.errors import UserError
from megasnow.curate.executors import run_tasks
from megasnow.data.output_check import folders_removed_on_failure
from megasnow.quality.score import plan_score_tasks
from megasnow.utils.atomic import atomic_write, atomic_write_text
from megasnow.utils.cli import removed_on_failure
from megasnow.utils.records import ShardReadError, iter_records

log = logging.getLogger(__name__)

CACHE_DIR = ".token_counts"
SELECTED_DIR = "selected"
REPEAT_NOTE = (
    "Repetition is not done by copying data: to train on this set several times (the paper: 4 x 12.5B "
    "tokens = 50B), binarize it (tools/preprocess_data.py) and give its prefix a repeat count in the phase-2 "
    "blend of the trainer config: `blend: [{path: data/phase2_selected_text_document, repeat: 4}]` "
    "(docs/training.md)."
)


class SelectionError(UserError, ValueError):
    """Scores that do not match their documents, or a budget that cannot be met."""


@dataclass
class CountTask:
    """Pass 1 for one shard: join documents with scores, count tokens; cached as an .npz file."""

    documents_path: str
    scores_path: str
    cache_path: str
    tokenizer_path: str
    text_field: str = "text"
    batch_docs: int = 256
    strict: bool = False  # a damaged document shard stops the run (else: its records before the damage count)


@dataclass
class WriteTask:
    """Pass 2 for one shard: copy the selected records (by position) into one output JSONL shard."""

    documents_path: str
    output_path: str
    positions: list
    scores: list
    strict: bool = False


_TOKENIZERS = {}


def shard_records(path, strict=False):
    """(position, record) of one document shard with the shared reader; a shard that stops being readable
    yields the records before the damage, as scoring kept them (strict: ShardReadError naming the file)."""
    try:
        yield from iter_records(path, strict=strict)
    except ShardReadError as e:
        if strict:
            raise
        log.warning("%s; its records before the damage are used, as scoring did", e)


def cached_tokenizer(path):
    if path not in _TOKENIZERS:
        from megasnow.data.tokenizer import load_tokenizer

        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def count_tokens(tokenizer, texts):
    """Token counts with the project tokenizer (no special tokens: the EOD is added at binarization)."""
    return [len(ids) for ids in tokenizer.encode_batch(texts)]


def _cache_is_current(task):
    if not os.path.exists(task.cache_path):
        return False
    with np.load(task.cache_path) as z:
        return str(z["tokenizer"]) == os.path.abspath(task.tokenizer_path) and float(z["scores_mtime"]) == os.path.getmtime(task.scores_path)


def count_shard_tokens(task: CountTask):
    """Write (positions, scores, tokens, languages) of the shard's scored documents to task.cache_path."""
    if _cache_is_current(task):
        return task.cache_path
    tokenizer = cached_tokenizer(task.tokenizer_path)
    with open(task.scores_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    by_pos = {r["pos"]: r for r in rows}
    positions, scores, langs, tokens, pending = [], [], [], [], []

    def flush():
        tokens.extend(count_tokens(tokenizer, pending))
        pending.clear()

    seen = 0
    for pos, rec in shard_records(task.documents_path, task.strict):
        row = by_pos.get(pos)
        if row is None:
            raise SelectionError(f"{task.documents_path}:{pos}: no score in {task.scores_path} (re-run scoring)")
        seen += 1
        if rec.get("id") is not None and row["id"] != rec.get("id"):
            raise SelectionError(
                f"{task.documents_path}:{pos}: document id {rec.get('id')!r} but {task.scores_path} has "
                f"{row['id']!r} there: scores belong to a different version of this shard"
            )
        if row["score"] is None:
            continue
        positions.append(pos)
        scores.append(row["score"])
        langs.append(str(row.get("lang") or "unknown"))
        pending.append(rec[task.text_field])
        if len(pending) >= task.batch_docs:
            flush()
    flush()
    if seen != len(rows):
        raise SelectionError(f"{task.scores_path} has {len(rows)} rows but {task.documents_path} has {seen} documents")
    with atomic_write(task.cache_path, "wb") as f:  # a file object: np.savez adds no suffix
        np.savez(
            f,
            positions=np.asarray(positions, dtype=np.int64),
            scores=np.asarray(scores, dtype=np.float64),
            tokens=np.asarray(tokens, dtype=np.int64),
            langs=np.asarray(langs, dtype=str),
            tokenizer=np.asarray(os.path.abspath(task.tokenizer_path)),
            scores_mtime=np.asarray(os.path.getmtime(task.scores_path)),
        )
    return task.cache_path


def write_selected_shard(task: WriteTask):
    """Copy the selected records of one shard (original fields + "quality_score"), atomically."""
    wanted = dict(zip(task.positions, task.scores))
    written = 0
    with atomic_write(task.output_path, "w", encoding="utf-8") as out:
        for pos, rec in shard_records(task.documents_path, task.strict):
            if pos in wanted:
                rec["quality_score"] = wanted[pos]
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                written += 1
    if written != len(wanted):
        raise SelectionError(f"{task.documents_path}: wrote {written} of {len(wanted)} selected documents")
    return written


def choose_per_language(langs, scores, tokens, budget, budget_name="the token budget"):
    """Boolean mask of selected documents and the per-language summary.

    Each language l, with T_l phase-1 tokens, takes its documents by descending score until it
    holds at least (budget / T) * T_l tokens; ties break by input order. A budget over T raises SelectionError
    naming `budget_name` (the flag or key the budget came from) and the most it can be.
    """
    total = int(tokens.sum())
    if budget <= 0:
        raise SelectionError(f"token budget must be positive, got {budget}")
    if budget > total:
        raise SelectionError(f"token budget {budget:,} exceeds the {total:,} tokens of scored documents: lower "
                             f"{budget_name} to at most {total:,}, or score more documents")
    fraction = budget / total
    selected = np.zeros(len(scores), dtype=bool)
    per_lang = {}
    for lang in sorted(set(langs.tolist())):
        idx = np.flatnonzero(langs == lang)
        order = idx[np.lexsort((idx, -scores[idx]))]  # best score first, then input order
        cum = np.cumsum(tokens[order])
        quota = fraction * cum[-1]
        take = min(len(order), int(np.searchsorted(cum, quota, side="left")) + 1) if quota > 0 else 0
        chosen = order[:take]
        selected[chosen] = True
        per_lang[lang] = {
            "documents": int(len(idx)),
            "phase1_tokens": int(cum[-1]),
            "quota_tokens": float(quota),
            "selected_documents": int(take),
            "selected_tokens": int(cum[take - 1]) if take else 0,
            "threshold": float(scores[chosen[-1]]) if take else None,
        }
    selected_total = sum(v["selected_tokens"] for v in per_lang.values())
    for v in per_lang.values():
        v["phase1_share"] = v["phase1_tokens"] / total
        v["selected_share"] = v["selected_tokens"] / selected_total
        v["share_deviation_pp"] = 100.0 * (v["selected_share"] - v["phase1_share"])
    return selected, per_lang, fraction


def select_documents(documents, scores_dir, output_dir, tokenizer_path, budget_tokens, executor="local",
                     workers=1, ray_address=None, text_field="text", mix_tolerance_pp=1.0, strict=False,
                     budget_name="the token budget"):
    """Run the selection; returns the report dict (also written as selection_report.{json,md} + PNG).

    A document shard that scoring found damaged is used up to the damage, like its scores (strict: the first
    damaged shard raises ShardReadError). `budget_name` names the budget's flag or key in the error of a budget
    over the scored tokens."""
    all_tasks, todo = plan_score_tasks(documents, scores_dir, annotator_path="")
    if todo:
        missing = ", ".join(t.input_path for t in todo[:3])
        raise SelectionError(f"{len(todo)} document shard(s) have no scores in {scores_dir} (e.g. {missing}); run scoring first")
    if budget_tokens <= 0:
        raise SelectionError(f"token budget must be positive, got {budget_tokens}")
    output_dir = os.path.abspath(output_dir)
    # A failure (budget over the corpus, a damaged shard, Ctrl-C) leaves nothing that was not there before: the
    # output folders this run created, and a token-count cache it started, are removed again.
    with folders_removed_on_failure(os.path.join(output_dir, "x")), \
            removed_on_failure(os.path.join(output_dir, CACHE_DIR)):
        return _select(all_tasks, scores_dir, output_dir, tokenizer_path, budget_tokens, budget_name, executor,
                       workers, ray_address, text_field, mix_tolerance_pp, strict)


def _select(all_tasks, scores_dir, output_dir, tokenizer_path, budget_tokens, budget_name, executor, workers,
            ray_address, text_field, mix_tolerance_pp, strict):
    cache_dir = os.path.join(output_dir, CACHE_DIR)
    count_tasks = []
    for t in all_tasks:
        rel = os.path.relpath(t.output_path, os.path.abspath(scores_dir))
        count_tasks.append(CountTask(t.input_path, t.output_path, os.path.join(cache_dir, rel + ".npz"),
                                     os.path.abspath(tokenizer_path), text_field, strict=strict))
    caches = run_tasks(count_shard_tokens, count_tasks, executor, workers, "count tokens", ray_address)

    shard_of, positions, scores, tokens, langs = [], [], [], [], []
    for shard, cache in enumerate(caches):
        with np.load(cache) as z:
            positions.append(z["positions"])
            scores.append(z["scores"])
            tokens.append(z["tokens"])
            langs.append(z["langs"].astype(object))
            shard_of.append(np.full(len(z["positions"]), shard, dtype=np.int64))
    shard_of, positions = np.concatenate(shard_of), np.concatenate(positions)
    scores, tokens, langs = np.concatenate(scores), np.concatenate(tokens), np.concatenate(langs).astype(str)
    if len(scores) == 0:
        raise SelectionError("no scored documents to select from")
    selected, per_lang, fraction = choose_per_language(langs, scores, tokens, budget_tokens, budget_name)

    selected_dir = os.path.join(output_dir, SELECTED_DIR)
    if os.path.isdir(selected_dir):  # a previous selection's shards must not mix with this one's
        shutil.rmtree(selected_dir)
    write_tasks = []
    for shard, t in enumerate(all_tasks):
        mask = selected & (shard_of == shard)
        if mask.any():
            rel = os.path.relpath(t.output_path, os.path.abspath(scores_dir))[: -len(".scores.jsonl")]
            write_tasks.append(WriteTask(t.input_path, os.path.join(selected_dir, rel + ".jsonl"),
                                         positions[mask].tolist(), scores[mask].tolist(), strict))
    written = run_tasks(write_selected_shard, write_tasks, executor, workers, "write selected", ray_address)

    max_dev = max(abs(v["share_deviation_pp"]) for v in per_lang.values())
    report = {
        "budget_tokens": int(budget_tokens),
        "scored_tokens": int(tokens.sum()),
        "fraction": fraction,
        "selected_tokens": int(tokens[selected].sum()),
        "selected_documents": int(selected.sum()),
        "scored_documents": int(len(scores)),
        "max_share_deviation_pp": max_dev,
        "mix_within_tolerance": bool(max_dev <= mix_tolerance_pp),
        "mix_tolerance_pp": mix_tolerance_pp,
        "languages": per_lang,
        "output_shards": [w.output_path for w in write_tasks],
        "written_documents": int(sum(written)),
        "tokenizer": os.path.abspath(tokenizer_path),
        "repetition": REPEAT_NOTE,
    }
    hist_path = os.path.join(output_dir, "score_histograms.png")
    plot_histograms(langs, scores, per_lang, hist_path)
    report["histograms_png"] = hist_path
    atomic_write_text(os.path.join(output_dir, "selection_report.json"), json.dumps(report, indent=2))
    atomic_write_text(os.path.join(output_dir, "selection_report.md"), render_report(report))
    return report


def plot_histograms(langs, scores, per_lang, path):
    """One score histogram per language, with the selection threshold marked; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(per_lang)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, lang in zip(axes.flat, names):
        ax.hist(scores[langs == lang], bins=40, range=(0.0, 1.0), color="#4c72b0")
        thr = per_lang[lang]["threshold"]
        if thr is not None:
            ax.axvline(thr, color="#c44e52", linestyle="--", label=f"threshold {thr:.3f}")
            ax.legend(fontsize=7)
        ax.set_title(f"{lang} ({per_lang[lang]['selected_documents']}/{per_lang[lang]['documents']} selected)", fontsize=9)
        ax.set_xlabel("quality score")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


def render_report(report):
    lines = [
        "# Phase-2 selection report",
        "",
        f"- budget: {report['budget_tokens']:,} tokens; selected {report['selected_tokens']:,} tokens in "
        f"{report['selected_documents']:,} of {report['scored_documents']:,} scored documents "
        f"(top {100 * report['fraction']:.2f}% of each language's tokens)",
        f"- language mix: largest share deviation {report['max_share_deviation_pp']:.3f} pp "
        f"(tolerance {report['mix_tolerance_pp']} pp: {'ok' if report['mix_within_tolerance'] else 'EXCEEDED'})",
        f"- tokens counted with {report['tokenizer']}",
        f"- histograms: {os.path.basename(report['histograms_png'])}",
        "",
        "| language | docs | selected docs | phase-1 tokens | selected tokens | phase-1 share | selected share | threshold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, v in sorted(report["languages"].items()):
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.4f}"
        lines.append(
            f"| {lang} | {v['documents']:,} | {v['selected_documents']:,} | {v['phase1_tokens']:,} | "
            f"{v['selected_tokens']:,} | {100 * v['phase1_share']:.2f}% | {100 * v['selected_share']:.2f}% | {thr} |"
        )
    lines += ["", report["repetition"], ""]
    return "\n".join(lines)
