"""The quickstart in its reduced CI setting: curation -> tokenizer -> phase-2 quality annotator (train, score, select)
-> phase-3 synthesis (a real megasnow.serve process and tools/synthesize.py, with the tiny random model) ->
binarization -> three phases with the HumanEval solution loss at each phase end -> samples + PNG. Also: no benchmark
reaches annotator training (the quickstart's positives and the shipped configs)."""
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.train.helpers import REPO, train_env


def _quickstart_module():
    spec = importlib.util.spec_from_file_location("quickstart_example", os.path.join(REPO, "examples", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_all(paths):
    for p in paths:
        yield from _jsonl(p)


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
    assert {r["phase"] for r in train} == {"phase1-general", "phase2-quality", "phase3-synthetic"}
    first = sum(r["loss"] for r in train[:5]) / 5
    last = sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5, (first, last)  # the loss visibly falls
    assert any(r.get("kind") == "eval" for r in recs)
    png = (work / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    samples = _jsonl(work / "samples.jsonl")
    # --min-new-tokens: no sample ends before a quarter of its 24 tokens (a bare prompt was the usual showcase)
    assert len(samples) == 3 and all(len(s["tokens"]) >= 6 and s["completion"] for s in samples)
    assert "loss " in stdout and "loss curve:" in stdout


def test_quickstart_ci_annotator_reports_heldout_auc(quickstart_ci):
    work, stdout = quickstart_ci
    folder = work / "quality" / "annotator"
    meta = json.loads((folder / "annotator.json").read_text())
    assert meta["format"] == "megasnow-quality-annotator" and meta["max_length"] == 64
    metrics = json.loads((folder / "metrics.json").read_text())
    # balanced classes: positives (stdlib + networkx functions) vs as many random phase-1 documents
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


def test_quickstart_ci_synthesis_runs_through_a_real_server(quickstart_ci):
    """Phase 3's data came from tools/synthesize.py against megasnow.serve (the tiny random model in --ci): every
    request answered over HTTP, post-processing drops the gibberish, and phase 3 then trains on phase 2 alone."""
    work, stdout = quickstart_ci
    summary = json.loads((work / "synthesis" / "summary.json").read_text())
    assert summary["model"] == "tiny-random" and summary["requests"] == {**summary["requests"], "planned": 8,
                                                                           "answered": 8, "not_answered": 0}
    (gen,) = summary["generation_this_run"]
    assert gen["asked"] == 8 and gen["failed"] == {} and gen["completion_tokens"] > 0
    o = summary["outputs"]
    assert o["generated"] == 8 and o["kept"] == 0 and sum(o["dropped_by_reason"].values()) == 8
    assert re.search(r"megasnow\.serve: tiny-random on http://127\.0\.0\.1:\d+/v1", stdout)
    # the responses synthesis cached are the ones the server says it answered: the server's request log holds 8
    # answered requests whose completion lengths are those of the 8 cached responses
    served = _jsonl(work / "synthesis" / "server_requests.jsonl")
    assert [r["status"] for r in served] == [200] * 8 and all(r["endpoint"].startswith("/v1/") for r in served)
    from megasnow.synth.cache import load_responses

    cached = load_responses([str(work / "synthesis")])
    assert len(cached) == 8 and {r["model"] for r in cached.values()} == {"tiny-random"}
    assert sorted(r["completion_tokens"] for r in served) == sorted(r["completion_tokens"] for r in cached.values())
    assert sum(r["completion_tokens"] for r in served) == gen["completion_tokens"]
    # phase 3's documents are exactly what post-processing kept (none of the tiny model's gibberish)
    kept = _jsonl(work / "phases" / "synthetic.jsonl")
    assert kept == list(_read_all(sorted((work / "synthesis" / "data").glob("*.jsonl")))) == []
    assert "synthesis kept no document, so phase 3 trains on the phase-2 selection alone" in stdout
    assert "phase 3: 0 of 8 synthetic documents kept (tiny-random; dropped: " in stdout
    run = yaml.safe_load((work / "run.yaml").read_text())
    assert run["phases"][2]["blend"] == [{"path": str(work / "data" / "phase2_text_document")}]
    assert not (work / "data" / "synthetic_text_document.idx").exists()


def test_quickstart_ci_reports_benchmark_loss_per_phase(quickstart_ci):
    """The trainer's benchmark hook runs at every phase end; the summary prints those HumanEval solution losses."""
    work, stdout = quickstart_ci
    recs = [json.loads(l) for l in (work / "log" / "metrics.jsonl").read_text().splitlines()]
    bench = [r for r in recs if r.get("kind") == "benchmark"]
    ends = {}
    for r in bench:
        ends[r["phase"]] = r
    assert [(p, r["step"]) for p, r in ends.items()] == [("phase1-general", 40), ("phase2-quality", 52),
                                                         ("phase3-synthetic", 58)]
    line = re.search(r"HumanEval solution loss .* at each phase's end: (.*)", stdout).group(1)
    printed = re.findall(r"(\S+) (\d+\.\d+) \(step (\d+)\)", line)
    assert printed == [(p, f"{r['humaneval_loss']:.3f}", str(r["step"])) for p, r in ends.items()]
    assert all(r["tokens"]["humaneval"] > 1000 for r in bench)


def test_quickstart_phase3_blends_kept_synthetic_documents(tmp_path):
    """With kept synthetic documents phase 3 is the paper's blend: synthetic 0.4, phase-2 selection 0.6."""
    from megasnow.train.config import load_train_config, resolve_phases

    qs = _quickstart_module()
    data = {name: str(tmp_path / f"{name}_text_document") for name in ("phase1", "phase2", "valid", "synthetic")}
    for mode in ("ci", "full"):
        cfg = qs.run_config(mode, str(tmp_path / mode), str(tmp_path / "code.model"), data)
        assert cfg["phases"][2]["blend"] == [{"path": data["synthetic"], "weight": 0.4},
                                             {"path": data["phase2"], "weight": 0.6}]
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        phases = resolve_phases(load_train_config(str(path)))
        assert [p.name for p in phases] == ["phase1-general", "phase2-quality", "phase3-synthetic"]
        assert [b.weight for b in phases[2].blend] == [0.4, 0.6]


def test_quickstart_positives_hold_no_benchmark(quickstart_ci):
    """Issue 15: the quickstart's annotator positives (the full setting's 200 stdlib + 164 networkx functions, and
    what the --ci run wrote) checked against HumanEval with megasnow.curate's decontaminator: no match; the log
    says none was dropped."""
    from megasnow.curate.config import DecontaminationConfig
    from megasnow.curate.decontaminate import Decontaminator

    work, stdout = quickstart_ci
    decon = Decontaminator(DecontaminationConfig(humaneval=True))
    assert len({r[1] for r in decon.rows}) == 164
    qs = _quickstart_module()
    a = qs.SETTINGS["full"]["annotator"]
    full = qs.stdlib_functions(a["stdlib"]) + qs.networkx_functions(a["networkx"])
    assert len(full) == a["stdlib"] + a["networkx"]
    ci = [r["text"] for r in map(json.loads, (work / "quality" / "positives.jsonl").read_text().splitlines())]
    assert len(ci) == 80
    assert [t for t in full + ci if decon.match(t)] == []
    assert "annotator positives: 80 documented functions (stdlib + networkx); 0 matched HumanEval" in stdout
    # the check is live: a HumanEval solution written the same way is caught
    from megasnow.quality.evaluate import humaneval_solutions

    assert decon.match(qs.as_document("x", "a.py", humaneval_solutions()[7]))[0]["task_id"] == "HumanEval/7"


def _positive_paths(node):
    """Every string under a `positives` key of a config (the annotator's training sources)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "positives":
                yield from _strings(value)
            else:
                yield from _positive_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from _positive_paths(value)


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_shipped_configs_keep_benchmarks_out():
    """No shipped config turns benchmark decontamination off (curation, synthesis), and none names a benchmark
    file as annotator training data (any `positives` source)."""
    found = positives = 0
    for path in sorted(glob.glob(os.path.join(REPO, "examples", "**", "*.yaml"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)

        def walk(node, where):
            nonlocal found
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "decontamination" and isinstance(value, dict):
                        found += 1
                        assert value.get("humaneval", True) is True and value.get("enabled", True) is True, where
                    walk(value, f"{where}.{key}")
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk(value, f"{where}[{i}]")

        walk(cfg, path)
        text = open(path, encoding="utf-8").read().lower()
        assert "humaneval.jsonl" not in text, path
        for source in _positive_paths(cfg):
            positives += 1
            assert not any(b in source.lower() for b in ("humaneval", "mbpp", "evalplus", "benchmark")), (path, source)
    assert found >= 1 and positives >= 3  # examples/recipe's annotators
    qs = open(os.path.join(REPO, "examples", "quickstart.py"), encoding="utf-8").read()
    assert "humaneval_solutions" not in qs


def test_quickstart_ci_ends_with_the_recipe_report(quickstart_ci):
    """Issue 15: the quickstart ends by writing megasnow.recipe's report into its workdir: loss and HumanEval
    solution loss per phase (the numbers of metrics.jsonl), the selected language mix (the selection report's), each
    plot a PNG beside the markdown; --ci skips the annotator's ROC measurement. The summary says where it is."""
    work, stdout = quickstart_ci
    md = work / "recipe_report.md"
    text = md.read_text()
    sections = [line for line in text.splitlines() if line.startswith("#")]
    assert sections == ["# Recipe report: the quickstart's three phases", "## Loss per phase",
                        "## Benchmark-solution loss per phase",
                        "## Annotator alignment: held-out benchmark solutions vs random phase-1 files",
                        "## Phase 2's language mix vs phase 1"]
    assert "was not measured (no alignment.json): skipped on request (compute_alignment=False: the quickstart's --ci" \
        in text and not (work / "quality" / "alignment.json").exists()
    held = json.loads((work / "quality" / "annotator" / "metrics.json").read_text())["heldout"]
    assert "the annotator's own held-out ROC-AUC (its training split" in text and f"{held['roc_auc']:.4f}" in text
    # the stage headers and the closing stage-time list name the same nine stages (export skipped in --ci)
    headers = re.findall(r"^\[quickstart [\d:]+\] (\d)/(\d) ", stdout, re.M)
    assert headers == [(str(i), "9") for i in range(1, 10)]
    assert "8/9 export to a HuggingFace LlamaForCausalLM folder: skipped (--ci)" in stdout
    times = re.search(r"stage times: (.*)", stdout).group(1).split(", ")
    assert [t.rsplit(" ", 2)[0] for t in times] == ["1 corpus", "2 tokenizer", "3 phase 2", "4 synthesis",
                                                     "5 binarize", "6 training", "7 samples", "8 export (skipped)",
                                                     "9 report"]
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pngs == ["recipe_report_loss.png", "recipe_report_benchmark_humaneval.png",
                    "recipe_report_language_mix.png"]
    for name in pngs:
        data = (work / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    assert f"report:     {md} (3 plots beside it)" in stdout
    # the phase table holds each phase's last HumanEval solution loss and its training loss range
    recs = [json.loads(l) for l in (work / "log" / "metrics.jsonl").read_text().splitlines()]
    rows = {r.split("|")[2].strip(): [c.strip() for c in r.split("|")[1:-1]]
            for r in text.splitlines() if r.startswith("| quickstart |")}
    assert list(rows) == ["phase1-general", "phase2-quality", "phase3-synthetic"]
    for phase, row in rows.items():
        bench = [r for r in recs if r.get("kind") == "benchmark" and r["phase"] == phase]
        train = [r for r in recs if r.get("kind", "train") == "train" and r["phase"] == phase]
        assert row[-1] == f"{bench[-1]['humaneval_loss']:.4f}"
        assert row[5] == f"{train[0]['loss']:.4f} → {train[-1]['loss']:.4f}"
        assert row[4] == f"{train[-1]['tokens']:,}"  # tokens since the run's start; row[3]: this phase's
    selection = json.loads((work / "quality" / "selection" / "selection_report.json").read_text())
    for lang, v in selection["languages"].items():
        assert f"| {lang} | {100 * v['phase1_share']:.2f}% | {100 * v['selected_share']:.2f}% |" in text


def test_quickstart_ctrl_c_exits_130_with_one_line(tmp_path):
    """Issue 11: Ctrl-C as a terminal sends it (SIGINT to the process group) while phase 2 works in the quickstart's
    own process (torch loaded): exit 130, no traceback, one `interrupted` line saying how to resume."""
    env = train_env()
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "examples", "quickstart.py"), "--ci", "--workdir",
                             str(tmp_path / "qs")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=REPO, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "] 3/9 phase 2" in line:
                time.sleep(1)  # into the annotator's work (positives, embeddings)
                os.killpg(proc.pid, signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [l for l in out.splitlines() if "interrupted" in l]
    assert lines == ["examples/quickstart.py: interrupted (Ctrl-C); finished stages are kept in the workdir, rerun "
                     "the same command to resume"], out[-3000:]


def test_quickstart_steps_ctrl_c_and_failure_are_one_line():
    """A step's tool that exits 130 (its own Ctrl-C line printed) is a KeyboardInterrupt in the quickstart (so
    run_tool prints the one line and exits 130); another failure is one line naming the tool, not a traceback."""
    qs = _quickstart_module()
    with pytest.raises(KeyboardInterrupt):
        qs.run([sys.executable, "-c", "import sys; sys.exit(130)"])
    with pytest.raises(KeyboardInterrupt):  # died by the signal (a tool without the CLI rule)
        qs.run([sys.executable, "-c", "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                      "os.kill(os.getpid(), signal.SIGINT)"])
    with pytest.raises(SystemExit) as info:
        qs.run([sys.executable, "tools/no_such_tool.py"])
    assert str(info.value.code) == "quickstart: no_such_tool.py failed (exit 2); its error is above"
    qs.run([sys.executable, "-c", "pass"])  # success: returns
