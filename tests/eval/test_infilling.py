"""Infilling tasks from HumanEval: the generator gives the published HumanEval-Infilling sizes (1033 single-line, 5815
multi-line) and rebuilds every original program, picks seeded subsets, and tools/evaluate.py scores middles in the
sandbox (pass@1) with exact match, and generates them with a local model through the FIM prompt."""
import json
import os

import pytest

from megasnow.eval.infilling import InfillTask, infilling_benchmark, spans
from megasnow.eval.prompts import build_request
from megasnow.eval.tasks import load_benchmark
from megasnow.generation.protocol import SamplingParams
from tests.eval.test_evaluate_tool import evaluate


@pytest.fixture(scope="module")
def humaneval():
    return load_benchmark("humaneval")


@pytest.mark.parametrize("mode, size", [("single-line", 1033), ("multi-line", 5815)])
def test_generator_gives_the_published_sizes_and_rebuilds_every_program(humaneval, mode, size):
    bench = infilling_benchmark(humaneval, mode)
    assert len(bench.tasks) == size  # HumanEval-SingleLine/MultiLineInfilling (Fried et al. 2022)
    assert len(bench.by_id) == size and bench.name == f"humaneval-{mode}-infilling"
    for t in bench.tasks:
        source = humaneval.by_id[t.source_task]
        assert t.prompt + t.canonical_solution + t.suffix == source.prompt + source.canonical_solution
        lines = t.canonical_solution.split("\n")
        assert lines[0].strip() and lines[-1].strip()  # the span starts and ends on a non-blank line
        assert (len(lines) == 1) == (t.first_line == t.last_line)
        assert t.reference_program() == source.reference_program()
        assert t.program_for({"completion": t.canonical_solution}) == source.program_for(
            {"completion": source.canonical_solution})
        if mode == "single-line":
            assert "\n" not in t.canonical_solution and t.stop == ("\n",)
    assert bench.tasks[0].task_id == ("SingleLineInfilling/HumanEval/0/L0" if mode == "single-line"
                                      else "MultiLineInfilling/HumanEval/0/L0")
    assert infilling_benchmark(humaneval, mode).fingerprint() == bench.fingerprint()


def test_spans_of_a_solution():
    code = "    a = 1\n\n    if a:\n        return a\n"
    assert spans(code, "single-line") == [(0, 0), (2, 2), (3, 3)]
    assert spans(code, "multi-line") == [(0, 0), (0, 2), (0, 3), (2, 2), (2, 3), (3, 3)]


def test_per_task_subset_is_seeded_and_stable(humaneval):
    a = infilling_benchmark(humaneval, "multi-line", per_task=2)
    b = infilling_benchmark(humaneval, "multi-line", per_task=2)
    c = infilling_benchmark(humaneval, "multi-line", per_task=2, seed=1)
    assert [t.task_id for t in a.tasks] == [t.task_id for t in b.tasks]
    assert [t.task_id for t in a.tasks] != [t.task_id for t in c.tasks]
    per_source = {}
    for t in a.tasks:
        per_source[t.source_task] = per_source.get(t.source_task, 0) + 1
    assert len(per_source) == 164 and max(per_source.values()) == 2


def test_infill_request_carries_the_suffix(humaneval):
    task = infilling_benchmark(humaneval.subset(["HumanEval/2"]), "single-line").tasks[0]
    req = build_request(task, "infill", SamplingParams(max_tokens=16), "0")
    assert (req.prompt, req.suffix, req.params.stop) == (task.prompt, task.suffix, ("\n",))
    with pytest.raises(ValueError, match="needs infilling tasks"):
        build_request(humaneval.tasks[0], "infill", SamplingParams(), "0")
    assert isinstance(task, InfillTask)


def test_score_gives_pass_at_1_and_exact_match(humaneval, tmp_path):
    bench = infilling_benchmark(humaneval.subset(["HumanEval/0", "HumanEval/4"]), "single-line")
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as f:
        for t in bench.tasks:  # the masked line itself, then the same line with trailing spaces, then a wrong one
            f.write(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution}) + "\n")
            f.write(json.dumps({"task_id": t.task_id, "completion": t.canonical_solution + "   "}) + "\n")
            f.write(json.dumps({"task_id": t.task_id, "completion": "    raise ValueError('masked')"}) + "\n")
    out = tmp_path / "out"
    proc = evaluate("score", "--benchmark", "humaneval", "--limit", "5", "--infill", "single-line", "--samples",
                    str(samples), "--output", str(out), "--k", "1", "--workers", "2", "--min-time-limit", "1",
                    "--cache-dir", str(tmp_path / "cache"), "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(out / "summary.json"))
    assert summary["tasks"] == len(bench.tasks) and summary["samples"] == 3 * len(bench.tasks)
    assert summary["exact_match"] == pytest.approx(2 / 3)
    assert summary["infilling"] == {"mode": "single-line", "tasks": len(bench.tasks), "source_tasks": 2}
    per_task = [json.loads(x) for x in open(out / "results.jsonl")]
    for entry in per_task:
        statuses = [s["base_status"] for s in entry["samples"]]
        assert statuses[:2] == ["passed", "passed"] and statuses[2] != "passed", entry["task_id"]
        assert entry["exact_match"] == pytest.approx(2 / 3)
    assert summary["pass_at_k"]["base"]["pass@1"] == pytest.approx(2 / 3)
    assert "exact match 66.7%" in proc.stdout


def test_run_with_a_local_model_fills_middles(tiny, tmp_path):
    ckpt, _ = tiny
    out = tmp_path / "run"
    proc = evaluate("run", "--benchmark", "humaneval", "--limit", "1", "--infill", "multi-line", "--infill-per-task",
                    "3", "--backend", "local", "--model", ckpt, "--max-tokens", "6", "--output", str(out), "--k", "1",
                    "--workers", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    samples = [json.loads(x) for x in open(out / "samples.jsonl")]
    assert len(samples) == 3 and all(s["prompt_style"] == "infill" and "completion" in s for s in samples)
    assert all(s["task_id"].startswith("MultiLineInfilling/HumanEval/0/") for s in samples)
    summary = json.load(open(out / "summary.json"))
    assert "solution_loss" not in summary and summary["generation"]["samples_written"] == 3
    assert summary["prompt_style"] == "infill" and "| infill |" in open(out / "summary.md").read()
    assert summary["tasks_in_benchmark"] == 164 and summary["limit"] == 1 and summary["tasks_selected"] == 1
    bench = infilling_benchmark(load_benchmark("humaneval").subset(["HumanEval/0"]), "multi-line", per_task=3)
    exact = [bench.by_id[s["task_id"]].exact_match(s["completion"]) for s in samples]
    assert summary["exact_match"] == sum(exact) / 3


def test_refusals(tmp_path):
    out = tmp_path / "out"
    for args, message in [
        (["generate", "--benchmark", "humaneval", "--infill", "single-line", "--prompt-style", "chat", "--model", "x"],
         "has no --prompt-style chat"),
        (["generate", "--benchmark", "humaneval", "--infill-per-task", "2", "--model", "x"], "needs --infill"),
        (["generate", "--benchmark", "humaneval", "--infill", "two-line", "--model", "x"], "--infill"),
        (["run", "--benchmark", "humaneval", "--infill", "single-line", "--model", "x", "--loss-model", "x"],
         "--loss-model x: the solution loss is a left-to-right measure, which an --infill run does not report"),
        (["score", "--benchmark", "humaneval", "--infill", "single-line", "--samples", "s", "--loss-model", "x"],
         "--loss-model x: the solution loss is a left-to-right measure"),
    ]:
        proc = evaluate(*args, "--output", str(out / "s.jsonl"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            proc.stderr
        assert not out.exists()
    assert os.path.exists(os.path.dirname(str(out)))


def test_infill_on_a_model_trained_without_fim_is_refused(tmp_path):
    """A checkpoint whose config.yaml records data.fim.rate 0: --infill is one error line naming it, nothing written."""
    import yaml

    from megasnow.generation.tiny_model import write_tiny_checkpoint

    step = write_tiny_checkpoint(str(tmp_path / "ckpt"), seed=3)
    with open(os.path.join(step, "config.yaml"), "w") as f:
        yaml.safe_dump({"data": {"fim": {"rate": 0.0}}}, f)
    out = tmp_path / "s.jsonl"
    proc = evaluate("generate", "--benchmark", "humaneval", "--limit", "1", "--infill", "single-line", "--backend",
                    "local", "--model", step, "--max-tokens", "4", "--output", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"--infill asks for fill-in-the-middle, but model {step} was not trained with fill-in-the-middle " \
           f"(data.fim.rate is 0 in its config.yaml)" in lines[0] and "leave --infill out" in lines[0]
    assert not out.exists()


def _without_fim(hf_dir, folder):
    """A copy of an HF model folder whose tokenizer has no FIM tokens (theirs renamed: the same model otherwise)."""
    import shutil

    shutil.copytree(hf_dir, folder)
    for name in os.listdir(folder):
        if name.endswith(".json"):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace("<fim_", "<nofim_"))
    return str(folder)


def test_infill_on_a_model_without_fim_tokens(tiny, tmp_path):
    """--infill with a model that cannot infill: the error names --infill (the user gave no suffix) and says to drop
    it; refused before generating by the local backend (exit 2, nothing left), and through a server (which can only
    answer 400 to every request) the advice names --infill too."""
    _, hf = tiny
    model = _without_fim(hf, tmp_path / "nofim")
    out = tmp_path / "out"
    common = ["run", "--benchmark", "humaneval", "--limit", "1", "--infill", "single-line", "--infill-per-task", "2",
              "--max-tokens", "4", "--k", "1", "--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    proc = evaluate(*common, "--backend", "local", "--model", model, "--output", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == ("error: 2 of 2 generation requests cannot run on nofim: --infill asks for fill-in-the-middle "
                        "(the OpenAI `suffix`), which needs a model whose tokenizer has FIM tokens (<fim_prefix>, "
                        "<fim_suffix>, <fim_middle> or another family's), and this model's has none: drop --infill, "
                        "or use a model trained with fill-in-the-middle (data.fim)")
    assert not out.exists()

    process = pytest.importorskip("megasnow.serve.process")
    with process.ServerProcess(model, "--threads", "1") as server:
        proc = evaluate(*common, "--backend", "openai", "--base-url", server.base_url, "--max-retries", "0",
                        "--output", str(out))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: all 2 generation requests failed"), \
        proc.stderr
    assert lines[0].endswith("a plain rerun is refused the same way; change what the message names (--infill: drop it "
                             "if the model has no FIM tokens (or use a model trained with fill-in-the-middle, "
                             "data.fim); --model, sampling flags, --max-tokens) and rerun"), lines[0]
    assert not out.exists()
