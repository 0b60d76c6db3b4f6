"""Samples through an OpenAI-compatible endpoint (a real megasnow.serve process on 127.0.0.1, random port) equal the
local backend's for the same weights, and score the same."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def evaluate(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "evaluate.py"), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_openai_endpoint_samples_equal_local_samples(tiny, tmp_path):
    pytest.importorskip("megasnow.generation.factory")
    process = pytest.importorskip("megasnow.serve.process")
    ckpt, _ = tiny
    bench = os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")
    common = ["--benchmark", bench, "--max-tokens", "12"]
    fields = ("task_id", "completion_id", "completion", "solution")
    with process.ServerProcess(ckpt, "--threads", "1") as server:
        for style in ("completion", "chat"):
            local, remote = tmp_path / f"local_{style}.jsonl", tmp_path / f"remote_{style}.jsonl"
            for path, backend in ((local, ["--backend", "local", "--model", ckpt]),
                                  (remote, ["--backend", "openai", "--base-url", server.base_url])):
                proc = evaluate("generate", *common, "--prompt-style", style, *backend, "--output", str(path))
                assert proc.returncode == 0, proc.stderr
            a = [{k: r.get(k) for k in fields} for r in map(json.loads, open(local))]
            b = [{k: r.get(k) for k in fields} for r in map(json.loads, open(remote))]
            assert len(a) == 4 and a == b, style


def test_failed_requests_through_an_endpoint(tiny, tmp_path):
    """A wrong --model (404 for every request): one line, exit 2, nothing left. Some requests failing (a prompt
    longer than the context): the rest are scored, exit 1, and a rerun asks only the failed ones again. Without
    --model the summary names the served model; --limit is reported beside the benchmark's size."""
    pytest.importorskip("megasnow.generation.factory")
    process = pytest.importorskip("megasnow.serve.process")
    ckpt, _ = tiny
    mbpp = os.path.join(FIXTURES, "mbpp_mini.jsonl")
    bench = tmp_path / "bench.jsonl"
    tasks = [json.loads(x) for x in open(mbpp)]
    tasks.append(dict(tasks[0], task_id=4, text="Write a function. " + "word " * 3000))  # > the 1024-token context
    bench.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    score = ["--k", "1", "--workers", "2", "--min-time-limit", "1", "--cache-dir", str(tmp_path / "cache")]
    with process.ServerProcess(ckpt, "--threads", "1") as server:
        common = ["run", "--backend", "openai", "--base-url", server.base_url, "--prompt-style", "completion",
                  "--max-tokens", "8", *score]
        out = tmp_path / "wrong"
        proc = evaluate(*common, "--benchmark", mbpp, "--model", "nosuchmodel", "--output", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        # refused at start-up from the endpoint's GET /models, before any generation request
        assert re.match(r"error: --model nosuchmodel: the endpoint at http://127\.0\.0\.1:\d+/v1 serves \['ckpt'\]",
                        lines[0]), lines[0]
        assert not out.exists()

        out = tmp_path / "limited"
        proc = evaluate(*common, "--benchmark", mbpp, "--limit", "2", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        summary = json.load(open(out / "summary.json"))
        assert summary["model"] == "ckpt" and summary["generation"]["model"] == "ckpt"
        assert summary["tasks"] == 2 and summary["tasks_selected"] == 2 and summary["tasks_in_benchmark"] == 3
        assert json.load(open(out / "samples.jsonl.meta.json"))["served_model"] == "ckpt"
        # the identical rerun reuses the samples without generating: the served name read back from beside them
        proc = evaluate(*common, "--benchmark", mbpp, "--limit", "2", "--output", str(out))
        assert proc.returncode == 0 and "exists, generated with the same settings: scoring it" in proc.stdout
        summary = json.load(open(out / "summary.json"))
        assert summary["model"] == "ckpt" and "generation" not in summary
        assert "| mbpp_mini | ckpt | completion |" in open(out / "summary.md").read()
        meta = json.load(open(out / "samples.jsonl.meta.json"))
        assert meta["served_model"] == "ckpt" and meta["model"] == ""  # the identity holds the --model given

        out = tmp_path / "some"
        for attempt in range(2):
            proc = evaluate(*common, "--benchmark", str(bench), "--output", str(out))
            assert proc.returncode == 1, proc.stderr
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith("error: only 3 of 4 tasks were generated and scored above (1 failed, first: 4: ")
            # a 400 for the context length is refused again by a rerun: the advice says what to change instead
            assert last.endswith("a plain rerun is refused the same way; lower --max-tokens, or pass --skip-too-long "
                                 "to score the tasks that do not fit the model's context as failed and rerun"), last
            assert "rerun the same command" not in last
            assert "maximum context length is 1024 tokens" in last
            summary = json.load(open(out / "summary.json"))
            assert summary["tasks"] == 3 and summary["generation_failed_tasks"] == 1 \
                and "**Partial score**: 1 of 4 tasks failed to generate" in open(out / "summary.md").read()
            assert summary["generation"]["requests"] == (4 if attempt == 0 else 1)  # the rerun asks only task 4
            assert not (out / "samples.jsonl").exists()
            partial = [json.loads(x) for x in open(out / "samples.jsonl.partial")]
            assert sorted(r["task_id"] for r in partial) == ["1", "2", "3"]
        assert "resuming: 3 of 4 tasks" in proc.stderr

        # ... and where the server refuses every task as too long, a score over none is refused, nothing left
        only_long = tmp_path / "only_long.jsonl"
        only_long.write_text(json.dumps(tasks[-1]) + "\n")
        out = tmp_path / "none_fits"
        proc = evaluate(*common, "--benchmark", str(only_long), "--skip-too-long", "--output", str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and not out.exists(), proc.stderr
        assert lines[0].startswith("error: --skip-too-long: none of the 1 tasks fits the model's context at "
                                   "--max-tokens 8, so a score would be over no generated task (first: 4: ")
        assert lines[0].endswith("lower --max-tokens, or use a model with a longer context"), lines[0]

        # --skip-too-long through a server, which can tell only by its 400: the task is scored as failed
        out = tmp_path / "skip"
        proc = evaluate(*common, "--benchmark", str(bench), "--skip-too-long", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        summary = json.load(open(out / "summary.json"))
        assert summary["tasks"] == 4 and summary["too_long"]["tasks"] == 1 and summary["too_long"]["task_ids"] == ["4"]
        assert summary["too_long"]["context_tokens"] == 1024
        assert "1 task did not fit the model's context of 1024 tokens" in proc.stdout.strip().splitlines()[-1]
