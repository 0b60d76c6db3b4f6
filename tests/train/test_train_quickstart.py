"""The quickstart in its reduced CI setting: curation -> tokenizer -> phase-2 quality annotator (train, score, select)
-> binarization -> three phases -> samples + PNG."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.train.helpers import REPO, train_env


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def quickstart_ci(tmp_path_factory):
    work = tmp_path_factory.mktemp("quickstart") / "qs"
    env = train_env()
    env["OMP_NUM_THREADS"] = "2"
    env["HF_HUB_OFFLINE"] = "1"  # everything the quickstart needs is on this machine
    env.pop("TRITON_INTERPRET", None)  # as a user runs it: reference kernels on CPU, not Triton's interpreter
    res = subprocess.run([sys.executable, os.path.join(REPO, "examples", "quickstart.py"), "--ci", "--workdir",
                          str(work)], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, res.stdout


def test_quickstart_ci_trains_three_phases(quickstart_ci):
    work, stdout = quickstart_ci
    # curation ran (tools/curate.py landed) and wrote its report
    assert (work / "curated" / "stats.json").exists()
    recs = [json.loads(l) for l in (work / "log" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("kind", "train") == "train"]
    assert [r["phase"] for r in train].count("phase1-general") == 40
    assert {r["phase"] for r in train} == {"phase1-general", "phase2-quality", "phase3-synthetic-standin"}
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5, (first, last)  # the loss visibly falls
    assert any(r.get("kind") == "eval" for r in recs)
    png = (work / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    samples = _jsonl(work / "samples.jsonl")
    assert len(samples) == 3 and all(len(s["tokens"]) > 0 for s in samples)
    assert "loss " in stdout and "loss curve:" in stdout


def test_quickstart_ci_annotator_reports_heldout_auc(quickstart_ci):
    work, stdout = quickstart_ci
    folder = work / "quality" / "annotator"
    meta = json.loads((folder / "annotator.json").read_text())
    assert meta["format"] == "megasnow-quality-annotator" and meta["max_length"] == 64
    metrics = json.loads((folder / "metrics.json").read_text())
    # balanced classes: positives (HumanEval + stdlib functions) vs as many random phase-1 documents
    assert metrics["heldout_examples"] == 40 and metrics["train_examples"] == 120
    logged = [float(x) for x in re.findall(r"annotator held-out ROC-AUC (\d\.\d+)", stdout)]
    assert logged and logged[0] == pytest.approx(metrics["heldout"]["roc_auc"], abs=1e-4)
    assert logged[0] > 0.5  # better than chance at telling the positives from phase-1 documents
    summary = re.search(r"selection: ([\d,]+) tokens in (\d+) of (\d+) phase-1 documents", stdout)
    assert summary, stdout[-3000:]


def test_quickstart_ci_phase2_is_the_per_language_selection(quickstart_ci):
    """phase2.jsonl is the selection's output: in every language the best-scored phase-1 documents, up to the
    language's share of the budget, crossing it by at most one document (selection.py's promise)."""
    from megasnow.data.indexed import IndexedDataset
    from megasnow.data.tokenizer import load_tokenizer

    work, _ = quickstart_ci
    report = json.loads((work / "quality" / "selection" / "selection_report.json").read_text())
    phase1 = _jsonl(work / "phases" / "phase1.jsonl")
    phase2 = _jsonl(work / "phases" / "phase2.jsonl")
    (shard,) = report["output_shards"]
    assert phase2 == [json.loads(line) for line in open(shard, encoding="utf-8")]
    assert len(phase2) == report["selected_documents"] > 0
    assert all("quality_score" in d for d in phase2)

    scores = _jsonl(work / "quality" / "scores" / "phase1.scores.jsonl")
    assert [s["id"] for s in scores] == [d["id"] for d in phase1] and all(s["score"] is not None for s in scores)
    tok = load_tokenizer(str(work / "tokenizer" / "code.model"))
    tokens = [len(tok.encode(d["text"])) for d in phase1]
    total, budget = sum(tokens), report["budget_tokens"]
    assert budget == 12_000 and report["selected_tokens"] >= budget
    chosen = {d["id"] for d in phase2}
    langs = sorted({d["lang"] for d in phase1})
    assert sorted(report["languages"]) == langs and len(langs) >= 2  # the per-language mix has work to do
    assert {d["lang"] for d in phase2} == set(langs)
    crossing = 0
    for lang in langs:
        idx = [i for i, d in enumerate(phase1) if d["lang"] == lang]
        order = sorted(idx, key=lambda i: (-scores[i]["score"], i))  # best first, ties in input order
        picked = [i for i in order if phase1[i]["id"] in chosen]
        assert picked == order[: len(picked)], lang  # the best-scored documents of the language, no others
        quota = budget * sum(tokens[i] for i in idx) / total
        taken = sum(tokens[i] for i in picked)
        v = report["languages"][lang]
        assert v["phase1_tokens"] == sum(tokens[i] for i in idx) and v["selected_tokens"] == taken
        assert taken >= quota > taken - tokens[picked[-1]], lang  # the quota, crossed by one document at most
        crossing += tokens[picked[-1]]
    # hence each language's share of phase 2 is its phase-1 share to within the crossing documents' weight
    bound_pp = 100 * crossing / budget
    assert report["max_share_deviation_pp"] <= bound_pp
    for lang in langs:
        v = report["languages"][lang]
        assert abs(v["selected_share"] - v["phase1_share"]) * 100 <= bound_pp

    ds = IndexedDataset(str(work / "data" / "phase2_text_document"))
    assert len(ds) == len(phase2)
    assert sum(len(ds[i]) - 1 for i in range(len(ds))) == report["selected_tokens"]  # + one EOD per document
