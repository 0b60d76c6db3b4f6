"""The alignment report: ROC-AUC of HumanEval canonical solutions (and user benchmark solutions)
against random corpus files, printed with the held-out classification metrics."""
import json
import os

import numpy as np
import pytest

from megasnow.quality.annotator import load_annotator
from megasnow.quality.metrics import roc_auc
from megasnow.quality.score import BatchedScorer
from megasnow.quality.training_data import sample_negatives
from tests.quality.machine_corpus import stdlib_functions, write_jsonl


def test_eval_reports_humaneval_and_user_benchmark_alignment(trained_annotator, training_corpus, tmp_path, capsys):
    from tools.annotate import main

    folder, metrics, _ = trained_annotator
    user = [{"prompt": f.split(":", 1)[0] + ":", "solution": f.split(":", 1)[1]} for f in stdlib_functions(120, seed=9)[-20:]]
    bench = write_jsonl(str(tmp_path / "bench.jsonl"), user)
    report_path = str(tmp_path / "alignment.json")
    rc = main(["eval", "--annotator", folder, "--corpus", training_corpus["documents"], "--num-random", "40",
               "--benchmark", bench, "--benchmark-fields", "prompt,solution", "--report", report_path, "--seed", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.load(open(report_path))

    he = report["benchmarks"]["humaneval"]
    assert he["solutions"] == 164 and he["roc_auc"] > 0.8
    assert set(report["benchmarks"]) == {"humaneval", "user", "all"}
    assert report["random_files"] == 40
    # Held-out metrics come from the annotator's training record and are printed with the AUCs.
    assert report["heldout"]["roc_auc"] == pytest.approx(metrics["heldout"]["roc_auc"])
    assert f"humaneval        ROC-AUC {he['roc_auc']:.4f}" in printed
    assert "Held-out classification" in printed and "precision@0.5" in printed and "recall@0.5" in printed

    # The user benchmark's AUC, recomputed independently from the same random files and solutions.
    annotator = load_annotator(folder)
    scorer = BatchedScorer(annotator)
    negatives = [e.text for e in sample_negatives([training_corpus["documents"]], 40, 5)]
    neg = scorer.score_texts(negatives)[0]
    pos = scorer.score_texts([u["prompt"] + u["solution"] for u in user])[0]
    expected = roc_auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    assert report["benchmarks"]["user"]["roc_auc"] == pytest.approx(expected, abs=1e-9)


def test_eval_recomputes_heldout_metrics_from_a_file(trained_annotator, training_corpus, tmp_path):
    from megasnow.quality.evaluate import alignment_report
    from megasnow.quality.training_data import write_examples

    folder, metrics, heldout = trained_annotator
    path = str(tmp_path / "heldout.jsonl")
    write_examples(path, heldout)
    report = alignment_report(load_annotator(folder), {"tiny": ["def f(x):\n    return x\n"]},
                              [training_corpus["documents"]], num_random=5, heldout_path=path)
    assert report["heldout"]["roc_auc"] == pytest.approx(metrics["heldout"]["roc_auc"], abs=1e-6)
    assert report["heldout"]["n"] == len(heldout) and report["heldout_source"] == os.path.abspath(path)
