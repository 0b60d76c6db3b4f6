"""The ablation's data: binarized phase-1 and held-out sets, each annotator (trained, scored, its ROC-AUC), the
selections the arms train on, and the random arm's draws. Every stage skips outputs that exist with the same inputs.

The random arm uses the selection rule itself with uniform random scores in place of the annotator's: the same
documents are eligible, each language keeps its phase-1 share and the budget is met the same way, so the only
difference from the selected arm is which documents are taken.
"""
import glob
import hashlib
import json
import os
import random
import subprocess
import sys

from megasnow.errors import UserError
from megasnow.recipe.counts import MIN_EXAMPLES_PER_CLASS
from megasnow.utils.atomic import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREPROCESS = os.path.join(REPO, "tools", "preprocess_data.py")
RELIABLE_HELDOUT_PER_CLASS = 10  # fewer held-out examples of a class: the annotator's own ROC-AUC is noted as rough


class RecipeError(UserError, RuntimeError):
    """A stage of the ablation failed in a way the user can act on (the message names the run or file)."""


def _file_state(paths):
    out = []
    for p in sorted(paths):
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, int(st.st_mtime_ns)])
    return out


def fingerprint(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def binarize(inputs, tokenizer, prefix, log, text_field="text"):
    """`prefix`_text_document.{bin,idx} from JSONL/Parquet `inputs` with tools/preprocess_data.py --append-eod;
    rebuilt when the inputs (paths, sizes, mtimes) or the tokenizer changed. Returns the dataset prefix."""
    from megasnow.utils.records import expand_inputs

    files = [os.path.abspath(f) for f in expand_inputs(inputs)]
    out = prefix + f"_{text_field}_document"
    stamp = out + ".inputs.json"
    state = {"inputs": _file_state(files), "tokenizer": _file_state([tokenizer]), "key": text_field}
    if os.path.exists(out + ".idx") and os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == state:
                return out
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    cmd = [sys.executable, PREPROCESS, "--input", *files, "--json-keys", text_field, "--tokenizer-model", tokenizer,
           "--append-eod", "--output-prefix", prefix, "--workers", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RecipeError(f"binarizing {len(files)} file(s) into {out} failed: {tail}")
    atomic_write_text(stamp, json.dumps(state))
    log(f"binarized {len(files)} file(s) -> {out}")
    return out


def dataset_tokens(prefix):
    """(documents, tokens) of an indexed dataset."""
    from megasnow.data.indexed import IndexedDataset

    ds = IndexedDataset(prefix)
    return len(ds.document_indices) - 1, int(ds.sequence_lengths.sum())


def positive_sources(spec):
    """megasnow.quality PositiveSources of an AnnotatorSpec's `positives`."""
    from megasnow.quality.training_data import PositiveSource

    return [PositiveSource(paths=list(p.paths), kind=p.kind, text_field=p.text_field, problem_field=p.problem_field,
                           solution_field=p.solution_field, comment_prefix=p.comment_prefix, limit=p.limit)
            for p in spec.positives]


def train_annotator_stage(spec, phase1, folder, device, log, text_field="text", benchmarks=()):
    """The annotator folder for `spec` (an AnnotatorSpec): spec.folder, or trained into `folder` from spec.positives
    vs random phase-1 documents with megasnow.quality (skipped when `folder` holds a finished annotator with the same
    settings). Training-set counts go to <folder>.training_data.json. `benchmarks` (benchmark files; HumanEval is
    always checked) go to the builder's benchmark check where it has one: positives matching them are dropped."""
    if spec.folder:
        return spec.folder
    sources = positive_sources(spec)
    settings = {"positives": [dict(vars(s), state=_file_state(_expand(s.paths))) for s in sources],
                "negatives": _file_state(_expand(phase1)), "mode": spec.mode, "encoder": spec.encoder,
                "max_length": spec.max_length, "heldout_fraction": spec.heldout_fraction, "seed": spec.seed}
    files = [os.path.abspath(b) for b in benchmarks if b.lower() != "humaneval"]
    if files:
        settings["benchmark_files"] = _file_state(files)
    stamp = folder.rstrip("/") + ".training_data.json"
    if os.path.exists(os.path.join(folder, "metrics.json")) and os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fingerprint(settings):
                return folder
    from megasnow.quality.train import TrainConfig, train_annotator
    from megasnow.quality.training_data import build_training_set

    log(f"annotator {spec.name}: building the training set (positives vs random phase-1 documents)")
    # the builder checks positives against HumanEval always and against the benchmark files given (leakage)
    train, heldout, stats = build_training_set(sources, phase1, heldout_fraction=spec.heldout_fraction, seed=spec.seed,
                                               negative_text_field=text_field, benchmarks=files,
                                               benchmark_key="measure.benchmarks")
    per_class = {label: sum(1 for e in train + heldout if e.label == label) for label in (0, 1)}
    if min(per_class.values()) < MIN_EXAMPLES_PER_CLASS:
        raise RecipeError(f"annotators[{spec.name}]: {per_class[1]} positive and {per_class[0]} negative examples "
                          f"left after deduplication and the benchmark check (stats: {stats['positives_available']} "
                          f"positives, {stats['negatives_sampled']} phase-1 negatives); an annotator needs at least "
                          f"{MIN_EXAMPLES_PER_CLASS} per class: add positives or phase-1 documents")
    matches = stats["benchmark_matches"]
    if matches.get("dropped"):
        log(f"annotator {spec.name}: {matches['dropped']} positive(s) matching a benchmark dropped (never trained on)")
    log(f"annotator {spec.name}: {stats['train']} train / {stats['heldout']} held-out examples "
        f"({stats['positives_available']} positives); training ({spec.mode}, {spec.max_length}-token window)")
    metrics = train_annotator(train, heldout, folder, TrainConfig(mode=spec.mode, encoder=spec.encoder,
                                                                  max_length=spec.max_length, device=device,
                                                                  seed=spec.seed), progress="log")
    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint(settings), "stats": stats}, indent=1))
    log(f"annotator {spec.name}: held-out ROC-AUC {metrics['heldout']['roc_auc']:.4f} (n={metrics['heldout']['n']})"
        + heldout_caveat(heldout))
    return folder


def heldout_caveat(heldout):
    """A note for a held-out ROC-AUC over fewer than RELIABLE_HELDOUT_PER_CLASS examples of a class ('' otherwise)."""
    n = min(sum(1 for e in heldout if e.label == label) for label in (0, 1))
    if n >= RELIABLE_HELDOUT_PER_CLASS:
        return ""
    return (f"; only {n} held-out example(s) in the smaller class (< {RELIABLE_HELDOUT_PER_CLASS}): a rough figure, "
            f"the benchmark ROC-AUC below is the measure to read")


def _expand(paths):
    from megasnow.utils.records import expand_inputs

    return [os.path.abspath(f) for f in expand_inputs(paths)]


def score_stage(annotator_folder, phase1, scores_dir, device, threads, log, text_field="text", name="annotator"):
    """Score every phase-1 document with the three-window rule (megasnow.quality.score; resumes per shard).
    Shards scored by another annotator or from changed inputs are scored again (the shards' own record of what
    made them, megasnow.quality.score.plan_score_tasks: a copied run folder is not rescored); scores of shards no
    longer among the inputs are deleted. Logs what it scores; returns the score summary."""
    from megasnow.quality.score import STATS_SUFFIX, plan_score_tasks, score_corpus, stats_path_for

    tasks, todo = plan_score_tasks(phase1, scores_dir, annotator_folder, overwrite=True, text_field=text_field)
    wanted = {t.output_path for t in tasks} | {stats_path_for(t.output_path) for t in tasks}
    for path in glob.glob(os.path.join(scores_dir, "**", "*" + STATS_SUFFIX), recursive=True) + \
            glob.glob(os.path.join(scores_dir, "**", "*.scores.jsonl"), recursive=True):
        if os.path.abspath(path) not in wanted:
            os.unlink(path)
    if todo:
        log(f"annotator {name}: scoring {len(todo)} of {len(tasks)} phase-1 shard(s) ({annotator_folder})")
    summary = score_corpus(phase1, scores_dir, annotator_folder, device=device, threads=threads, progress="log",
                           text_field=text_field, overwrite=True)
    if summary["shards_scored_now"]:
        log(f"scored {summary['scored']} of {summary['documents']} phase-1 documents ({summary['rate_this_run']})")
    return summary


def random_scores(scores_dir, out_dir, seed):
    """A copy of the scores folder with each scored document's score replaced by a uniform random draw (seeded by
    `seed` and the file's relative path); unscorable documents stay unscorable. Returns out_dir."""
    stamp = os.path.join(out_dir, "recipe_random.json")
    files = sorted(glob.glob(os.path.join(scores_dir, "**", "*.scores.jsonl"), recursive=True))
    state = {"source": _file_state(files), "seed": seed}
    if os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == state:
                return out_dir
    for path in files:
        rel = os.path.relpath(path, scores_dir)
        rng = random.Random(f"{seed}:{rel}")
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if row.get("score") is not None:
                        row["score"] = rng.random()
                    rows.append(json.dumps(row))
        stats = path[: -len(".scores.jsonl")] + ".stats.json"
        dst = os.path.join(out_dir, rel)
        with open(stats, encoding="utf-8") as f:
            atomic_write_text(dst[: -len(".scores.jsonl")] + ".stats.json", f.read())
        atomic_write_text(dst, "".join(r + "\n" for r in rows))
    atomic_write_text(stamp, json.dumps(state))
    return out_dir


def select_stage(phase1, scores_dir, out_dir, tokenizer, budget, tolerance_pp, log, text_field="text"):
    """Per-language top documents up to `budget` tokens (megasnow.quality.selection); reuses a finished selection
    made from the same scores. Returns the selection report (its output_shards are the selected JSONL)."""
    report_path = os.path.join(out_dir, "selection_report.json")
    stamp = os.path.join(out_dir, "recipe_inputs.json")
    score_files = sorted(glob.glob(os.path.join(scores_dir, "**", "*.scores.jsonl"), recursive=True))
    state = {"scores": _file_state(score_files), "budget": budget, "tokenizer": _file_state([tokenizer]),
             "tolerance": tolerance_pp}
    if os.path.exists(report_path) and os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == state:
                with open(report_path, encoding="utf-8") as g:
                    return json.load(g)
    from megasnow.quality.selection import select_documents

    report = select_documents(phase1, scores_dir, out_dir, tokenizer, budget, mix_tolerance_pp=tolerance_pp,
                              text_field=text_field)
    atomic_write_text(stamp, json.dumps(state))
    log(f"selection in {out_dir}: {report['selected_tokens']:,} tokens in {report['selected_documents']} of "
        f"{report['scored_documents']} documents for a {budget:,}-token budget; language mix within "
        f"{report['max_share_deviation_pp']:.2f} pp of phase 1's")
    if not report["mix_within_tolerance"]:
        from megasnow.utils.cli import warn

        warn(f"selection {out_dir}: language mix off by {report['max_share_deviation_pp']:.2f} pp (> "
             f"{tolerance_pp} pp): documents are large next to the budget")
    return report
