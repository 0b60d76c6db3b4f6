"""The annotator's ROC-AUC at separating held-out benchmark solutions from random phase-1 files, with the ROC curve.

The paper (Arctic-SnowCoder, sec. 3.2) found that this number tracks downstream pass@1. Scores come from
megasnow.quality.evaluate.alignment_report (the three-window rule, texts seen in annotator training left out on both
sides); the AUC is recomputed with scikit-learn's roc_auc_score and must agree with the report's rank statistic.
"""
import json
import os

from megasnow.utils.atomic import atomic_write_text


def benchmark_texts(specs):
    """{benchmark name: [prompt + canonical_solution, ...]} for 'humaneval' or EvalPlus/HumanEval/MBPP files."""
    from megasnow.eval.tasks import load_benchmark

    out = {}
    for spec in specs:
        bench = load_benchmark(spec)
        name = bench.name if bench.name not in out else f"{bench.name}_{len(out)}"
        out[name] = [t.prompt + t.canonical_solution for t in bench.tasks]
    return out


def roc_points(pos_scores, neg_scores):
    """(fpr, tpr, auc) from scikit-learn for positives (label 1) vs negatives (label 0)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    s = np.r_[np.asarray(pos_scores, dtype=np.float64), np.asarray(neg_scores, dtype=np.float64)]
    fpr, tpr, _ = roc_curve(y, s)
    return fpr.tolist(), tpr.tolist(), float(roc_auc_score(y, s))


def measure_alignment(annotator_folder, corpus_inputs, benchmark_specs, out_json, num_random=500, seed=0,
                      device="cpu", text_field="text"):
    """Score the benchmarks' canonical solutions and `num_random` random corpus files not seen in the annotator's
    training; write and return {"held_out": ..., "random_files", "benchmarks": {name: {roc_auc, solutions,
    mean_score, fpr, tpr}}, "scores": {...}}. A finished file with the same settings is read back instead."""
    settings = {"annotator": os.path.abspath(annotator_folder), "corpus": [os.path.abspath(p) for p in corpus_inputs],
                "benchmarks": list(benchmark_specs), "num_random": num_random, "seed": seed}
    if os.path.exists(out_json):
        with open(out_json, encoding="utf-8") as f:
            done = json.load(f)
        if done.get("settings") == settings:
            return done
    from megasnow.quality.annotator import load_annotator
    from megasnow.quality.evaluate import WindowProgress, alignment_report

    annotator = load_annotator(annotator_folder, device=device)
    progress = WindowProgress("alignment: score", mode="log")
    try:
        report = alignment_report(annotator, benchmark_texts(benchmark_specs), corpus_inputs, num_random=num_random,
                                  seed=seed, text_field=text_field, keep_scores=True, on_batch=progress)
    finally:
        progress.close()
    neg = report["scores"]["random"]
    for name, pos in report["scores"]["benchmarks"].items():
        fpr, tpr, auc = roc_points(pos, neg)
        r = report["benchmarks"][name]
        if abs(auc - r["roc_auc"]) > 1e-9:  # two implementations of one statistic: a mismatch is a bug
            raise RuntimeError(f"ROC-AUC mismatch for {name}: sklearn {auc} vs megasnow.quality {r['roc_auc']}")
        r.update(roc_auc=auc, fpr=fpr, tpr=tpr)
    report["settings"] = settings
    report["held_out"] = ("each benchmark's canonical solutions (prompt + canonical_solution) not seen in annotator "
                          f"training vs {report['random_files']} random phase-1 files not seen in training "
                          f"(reservoir sample, seed {seed})")
    atomic_write_text(out_json, json.dumps(report, indent=1))
    return report
