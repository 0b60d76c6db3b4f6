"""The recipe report renders from an ablation folder and from a quickstart work folder, and its tables hold the
numbers of the run folders' result.json and metrics.jsonl."""
import json
import os
import shutil

import pytest

from megasnow.recipe.report import ReportError, write_recipe_report


def _tables(md):
    """{section title: [[cells], ...]} of every markdown table (header row first)."""
    out, title, rows = {}, None, None
    for line in md.splitlines():
        if line.startswith("## ") or line.startswith("# "):
            title, rows = line.lstrip("# ").strip(), None
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows is None:
                rows = out.setdefault(title, [])
            rows.append(cells)
        elif not line.startswith("|"):
            rows = None
    return out


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _mean_std(values):
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def test_ablation_report_tables_match_the_run_folders(tiny_run, tmp_path):
    out, cfg, _, _ = tiny_run
    md_path = str(tmp_path / "recipe.md")
    result = write_recipe_report(out, md_path)
    assert result["layout"] == "ablation" and result["markdown"] == md_path
    names = sorted(os.path.basename(p) for p in result["plots"])
    assert names == ["recipe_benchmark_humaneval_plus_mini.png", "recipe_benchmark_mbpp_plus_mini.png",
                     "recipe_language_mix.png", "recipe_loss.png", "recipe_roc.png"]
    assert all(_png(p) and os.path.dirname(p) == str(tmp_path) for p in result["plots"])
    md = open(md_path).read()
    for p in names:
        assert f"]({p})" in md
    tables = _tables(md)

    # per-seed table: every number is the run's result.json, formatted to 4 decimals
    runs = tables["Runs"]
    assert runs[0][:5] == ["arm", "seed", "tokens", "final train loss", "held-out loss"]
    seen = 0
    for row in runs[1:]:
        with open(os.path.join(out, "arms", row[0], f"seed{row[1]}", "result.json")) as f:
            res = json.load(f)
        m = res["measures"]
        assert row[2] == f"{res['tokens']:,}"
        assert row[3] == f"{res['final_train_loss']:.4f}"
        assert row[4] == f"{m['heldout_loss']:.4f}"
        assert row[5] == f"{m['benchmark_loss']['humaneval_plus_mini']:.4f} / {m['benchmark_loss']['mbpp_plus_mini']:.4f}"
        seen += 1
    assert seen == 6

    # per-arm table: mean ± std [min, max] over the seeds' result.json
    arms = tables["Final measures per arm (mean ± std [min, max] over seeds)"]
    by_arm = {row[0]: row for row in arms[1:]}
    for arm in cfg["ablation"]["arms"]:
        vals = []
        for seed in cfg["ablation"]["seeds"]:
            with open(os.path.join(out, "arms", arm, f"seed{seed}", "result.json")) as f:
                vals.append(json.load(f)["measures"]["benchmark_loss"]["humaneval_plus_mini"])
        mean, std = _mean_std(vals)
        assert by_arm[arm][4] == f"{mean:.4f} ± {std:.4f} [{min(vals):.4f}, {max(vals):.4f}]"
    with open(os.path.join(out, "base", "result.json")) as f:
        base = json.load(f)["measures"]
    assert by_arm["phase-1 checkpoint (before)"][3] == f"{base['heldout_loss']:.4f}"

    # per-phase table: first/last train loss and the last in-run evaluations of each metrics.jsonl
    phases = tables["Loss per phase (from each run's metrics.jsonl)"]
    row = next(r for r in phases[1:] if r[0] == "random seed 1")
    with open(os.path.join(out, "arms", "random", "seed1", "log", "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    bench = [r for r in recs if r.get("kind") == "benchmark"]
    assert phases[0][3:5] == ["tokens in this phase", "tokens since the run's start"]
    # one phase per arm run: its tokens are the run's (as in the Runs table)
    assert row[2] == f"1–{train[-1]['step']}" and row[3] == row[4] == f"{train[-1]['tokens']:,}"
    assert row[5] == f"{train[0]['loss']:.4f} → {train[-1]['loss']:.4f}"
    assert row[6] == f"{evals[-1]['loss']:.4f}"
    assert row[7] == f"{bench[-1]['humaneval_plus_mini_loss']:.4f}"

    # comparisons: selected vs random on the first benchmark, difference of the means
    comp = tables["Comparisons (A − B over seeds; a difference counts only where Welch's t-test gives p < 0.05)"]
    row = next(r for r in comp[1:] if r[0] == "selected vs random" and r[1] == "humaneval_plus_mini solution loss")
    a = [float(x) for x in [r[5].split(" / ")[0] for r in runs[1:] if r[0] == "selected"]]
    b = [float(x) for x in [r[5].split(" / ")[0] for r in runs[1:] if r[0] == "random"]]
    assert float(row[4]) == pytest.approx(sum(a) / 2 - sum(b) / 2, abs=2e-4)
    assert row[7].strip("*") in ("within noise", "selected lower", "selected higher")

    # alignment and language mix come from alignment.json / selection_report.json
    with open(os.path.join(out, "quality", "tiny", "alignment.json")) as f:
        al = json.load(f)
    align = tables["Annotator alignment: held-out benchmark solutions vs random phase-1 files"]
    row = next(r for r in align[1:] if r[1] == "mbpp_plus_mini")
    assert row[2] == f"{al['benchmarks']['mbpp_plus_mini']['roc_auc']:.4f}" and row[4] == "20"
    with open(os.path.join(out, "quality", "tiny", "selections", "400", "selection_report.json")) as f:
        sel = json.load(f)
    mix = tables["Selected language mix vs phase 1"]
    assert mix[0][:3] == ["language", "phase-1 share", "tiny top 400 share"]
    for row in mix[1:]:
        v = sel["languages"][row[0]]
        assert row[1] == f"{100 * v['phase1_share']:.2f}%" and row[2] == f"{100 * v['selected_share']:.2f}%"


def _quickstart_folder(tiny_run, tiny_inputs, root):
    """A quickstart-layout work folder: a three-phase metrics.jsonl, the annotator, phase-1 documents, a selection."""
    out = tiny_run[0]
    os.makedirs(os.path.join(root, "log"))
    recs = []
    loss = 6.0
    for i, phase in enumerate(("phase1-general", "phase2-quality", "phase3-synthetic-standin")):
        for s in range(1, 5):
            step = 4 * i + s
            loss -= 0.1
            recs.append({"kind": "train", "step": step, "phase": phase, "loss": loss, "tokens": 128 * step})
        recs.append({"kind": "eval", "step": 4 * i + 4, "phase": phase, "loss": loss + 0.3})
        recs.append({"kind": "benchmark", "step": 4 * i + 4, "phase": phase, "humaneval_loss": loss + 0.5,
                     "tokens": {"humaneval": 100}})
    with open(os.path.join(root, "log", "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    shutil.copytree(tiny_inputs["annotator"], os.path.join(root, "quality", "annotator"))
    os.makedirs(os.path.join(root, "phases"))
    shutil.copy(tiny_inputs["phase1"], os.path.join(root, "phases", "phase1.jsonl"))
    os.makedirs(os.path.join(root, "quality", "selection"))
    shutil.copy(os.path.join(out, "quality", "tiny", "selections", "400", "selection_report.json"),
                os.path.join(root, "quality", "selection", "selection_report.json"))
    return recs


def test_quickstart_folder_report(tiny_run, tiny_inputs, tmp_path):
    work = str(tmp_path / "qs")
    recs = _quickstart_folder(tiny_run, tiny_inputs, work)
    result = write_recipe_report(work, os.path.join(work, "recipe_report.md"), num_random=15)
    assert result["layout"] == "quickstart"
    assert sorted(os.path.basename(p) for p in result["plots"]) == [
        "recipe_report_benchmark_humaneval.png", "recipe_report_language_mix.png", "recipe_report_loss.png",
        "recipe_report_roc.png"]
    assert all(_png(p) for p in result["plots"])
    # the annotator's ROC-AUC was measured (HumanEval's 164 solutions vs 15 random phase-1 files) and cached
    with open(os.path.join(work, "quality", "alignment.json")) as f:
        al = json.load(f)
    assert al["random_files"] == 15 and al["benchmarks"]["humaneval"]["solutions"] == 164
    tables = _tables(open(result["markdown"]).read())
    rows = tables["Loss per phase"]
    assert rows[0][-1] == "humaneval solution loss (last in-run)"
    for row, phase in zip(rows[1:], ("phase1-general", "phase2-quality", "phase3-synthetic-standin")):
        train = [r for r in recs if r["kind"] == "train" and r["phase"] == phase]
        ev = [r for r in recs if r["kind"] == "eval" and r["phase"] == phase]
        bench = [r for r in recs if r["kind"] == "benchmark" and r["phase"] == phase]
        assert row[1] == phase and row[2] == f"{train[0]['step']}–{train[-1]['step']}"
        # per phase (4 steps of 128 tokens) and cumulative over the run's three phases
        assert row[3] == f"{4 * 128:,}" and row[4] == f"{train[-1]['tokens']:,}"
        assert row[5] == f"{train[0]['loss']:.4f} → {train[-1]['loss']:.4f}"
        assert row[6] == f"{ev[-1]['loss']:.4f}" and row[7] == f"{bench[-1]['humaneval_loss']:.4f}"
    align = tables["Annotator alignment: held-out benchmark solutions vs random phase-1 files"]
    assert align[1][2] == f"{al['benchmarks']['humaneval']['roc_auc']:.4f}"
    # a second report reads the cached alignment instead of scoring again
    mtime = os.path.getmtime(os.path.join(work, "quality", "alignment.json"))
    write_recipe_report(work, os.path.join(work, "again.md"), num_random=15)
    assert os.path.getmtime(os.path.join(work, "quality", "alignment.json")) == mtime


def test_quickstart_report_without_alignment_says_why_and_shows_the_annotator_roc_auc(tiny_run, tiny_inputs,
                                                                                    tmp_path):
    work = str(tmp_path / "qs")
    _quickstart_folder(tiny_run, tiny_inputs, work)
    held = {"roc_auc": 0.8125, "n": 8, "accuracy": 0.75}
    with open(os.path.join(work, "quality", "annotator", "metrics.json"), "w") as f:
        json.dump({"heldout": held}, f)
    result = write_recipe_report(work, os.path.join(work, "r.md"), compute_alignment=False)
    text = open(result["markdown"]).read()
    assert not os.path.exists(os.path.join(work, "quality", "alignment.json"))
    assert ("The annotator's ROC-AUC on benchmark solutions was not measured (no alignment.json): skipped on request "
            "(compute_alignment=False: the quickstart's --ci, or recipe_ablation.py report --no-alignment)") in text
    assert ("- `annotator`: the annotator's own held-out ROC-AUC (its training split: positives vs phase-1 documents, "
            "not benchmark solutions): 0.8125 (n=8)") in text


def test_report_of_a_folder_without_runs_is_a_user_error(tmp_path):
    with pytest.raises(ReportError, match="neither an ablation folder"):
        write_recipe_report(str(tmp_path))
