"""The alignment report: ROC-AUC of HumanEval canonical solutions (and user benchmark solutions) against
random corpus files, scored only on texts the annotator did not train on, printed with held-out metrics."""
import json
import os

import numpy as np
import pytest

from megasnow.quality.annotator import load_annotator
from megasnow.quality.metrics import roc_auc
from megasnow.quality.score import BatchedScorer
from megasnow.quality.training_data import sample_negatives, text_key
from tests.quality.machine_corpus import humaneval_solutions, stdlib_functions, write_jsonl


def test_eval_reports_alignment_on_solutions_unseen_in_training(trained_annotator, training_corpus, tmp_path, capsys):
    from tools.annotate import main

    folder, metrics, heldout, train = trained_annotator
    trained_on = {e.text for e in train + heldout}
    # The folder's record of its training texts is exactly the train + held-out split.
    assert set(np.load(os.path.join(folder, "seen_texts.npy")).tolist()) == {text_key(t) for t in trained_on}

    functions = stdlib_functions(120, seed=9)[-20:]  # overlaps the training positives (another shuffle)
    user = [{"prompt": f.split(":", 1)[0] + ":", "solution": f.split(":", 1)[1]} for f in functions]
    bench = write_jsonl(str(tmp_path / "bench.jsonl"), user)
    report_path = str(tmp_path / "alignment.json")
    rc = main(["eval", "--annotator", folder, "--corpus", training_corpus["documents"], "--num-random", "40",
               "--benchmark", bench, "--benchmark-fields", "prompt,solution", "--report", report_path, "--seed", "5"])
    assert rc == 0
    printed, err = capsys.readouterr()
    report = json.load(open(report_path))
    # progress: whole lines per scoring pass (not a tty here), with counts and a rate
    progress = [line for line in err.splitlines() if line.startswith("eval: score: ")]
    assert progress and all("windows" in line and "\r" not in line for line in progress), err
    assert any("done" in line for line in progress)

    # No HumanEval solution was a training positive: all 164 are scored, and they separate.
    he = report["benchmarks"]["humaneval"]
    unseen_he = [t for t in humaneval_solutions() if t not in trained_on]
    assert len(unseen_he) == 164
    assert he["solutions"] == 164 and he["excluded_seen"] == 0
    assert he["roc_auc"] >= 0.95  # easy negatives here (headers, configs)
    # never trained on HumanEval, the annotator still scores its solutions higher (measured 0.58 vs 0.44)
    assert he["mean_score"] > report["random_mean_score"] + 0.1
    user_seen = sum(f in trained_on for f in functions)
    assert user_seen > 0  # the exclusion is exercised on the user benchmark too
    assert report["benchmarks"]["user"]["solutions"] == 20 - user_seen
    assert report["benchmarks"]["user"]["excluded_seen"] == user_seen
    assert set(report["benchmarks"]) == {"humaneval", "user", "all"}
    # Random files are drawn from the corpus minus the training negatives.
    assert report["random_files"] == 40 and report["seen_texts_excluded"]
    assert report["random_files_seen_skipped"] == sum(e.label == 0 for e in train + heldout)
    # Held-out metrics come from the annotator's training record and are printed with the AUCs.
    assert report["heldout"]["roc_auc"] == pytest.approx(metrics["heldout"]["roc_auc"])
    assert f"humaneval        ROC-AUC {he['roc_auc']:.4f}   (164 solutions, mean score" in printed
    assert "Held-out classification" in printed and "precision@0.5" in printed and "recall@0.5" in printed

    # Both AUCs recomputed independently from unseen solutions and unseen random files.
    annotator = load_annotator(folder)
    scorer = BatchedScorer(annotator)
    exclude = {text_key(t) for t in trained_on}
    negatives = [e.text for e in sample_negatives([training_corpus["documents"]], 40, 5, exclude_keys=exclude)]
    assert not set(negatives) & trained_on
    neg = scorer.score_texts(negatives)[0]
    for name, texts in (("humaneval", unseen_he), ("user", [f for f in functions if f not in trained_on])):
        pos = scorer.score_texts(texts)[0]
        expected = roc_auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
        assert report["benchmarks"][name]["roc_auc"] == pytest.approx(expected, abs=1e-9)


def test_eval_recomputes_heldout_metrics_and_can_include_seen_texts(trained_annotator, training_corpus, tmp_path):
    from megasnow.quality.evaluate import alignment_report
    from megasnow.quality.training_data import write_examples

    folder, metrics, heldout, train = trained_annotator
    path = str(tmp_path / "heldout.jsonl")
    write_examples(path, heldout)
    seen_positives = [e.text for e in train if e.label == 1][:3]
    bench = {"mixed": seen_positives + ["def f(x):\n    return x\n"]}
    annotator = load_annotator(folder)
    report = alignment_report(annotator, bench, [training_corpus["documents"]], num_random=5, heldout_path=path)
    assert report["heldout"]["roc_auc"] == pytest.approx(metrics["heldout"]["roc_auc"], abs=1e-6)
    assert report["heldout"]["n"] == len(heldout) and report["heldout_source"] == os.path.abspath(path)
    assert report["benchmarks"]["mixed"]["solutions"] == 1 and report["benchmarks"]["mixed"]["excluded_seen"] == 3
    # Whitespace changes do not make a training text unseen.
    reindented = {"reindented": [seen_positives[0].replace("    ", "\t") + "\n\n"]}
    with pytest.raises(ValueError, match="no solutions the annotator did not train on"):
        alignment_report(annotator, reindented, [training_corpus["documents"]], num_random=5)

    everything = alignment_report(annotator, bench, [training_corpus["documents"]], num_random=5, exclude_seen=False)
    assert everything["benchmarks"]["mixed"]["solutions"] == 4 and everything["benchmarks"]["mixed"]["excluded_seen"] is None
    assert not everything["seen_texts_excluded"] and everything["random_files_seen_skipped"] is None
