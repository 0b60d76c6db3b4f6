"""Samples through an OpenAI-compatible endpoint (a real megasnow.serve process on 127.0.0.1, random port) equal the
local backend's for the same weights, and score the same."""
import json
import os
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
