"""Fixtures for synthesis tests: a seed-document shard of real code, a tiny megasnow model, the tool runner."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "synthesize.py")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random megasnow checkpoint with a real BPE tokenizer and ChatML template (served or loaded)."""
    from megasnow.generation.tiny_model import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny") / "tiny"))


@pytest.fixture(scope="session")
def seed_shard(tmp_path_factory):
    """Curated-format seed documents (Python stdlib, generated Java and Go) with quality scores."""
    from tests.synth.test_synth_seeds import write_seed_docs

    path = tmp_path_factory.mktemp("seeds") / "selected.jsonl"
    write_seed_docs(path, bad_lines=False)
    return str(path)


def run_tool(*args, env=None, timeout=240):
    """Run tools/synthesize.py in a subprocess (PYTHONPATH = this tree); returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# checks that gibberish from a random tiny model cannot pass: off where a test needs outputs to compare
LENIENT = ["prompt.style=completion", 'prompt.answer_prefix="```{{fence}}\\n"', 'prompt.answer_suffix="\\n```\\n"',
           "postprocess.syntax_check=false", "postprocess.require_stop=false", "postprocess.filters.enabled=false",
           "postprocess.decontamination.enabled=false", "postprocess.min_lines=0", "postprocess.min_chars=0"]
