"""Test-wide setup: Triton runs in its interpreter when no GPU is present (set before triton imports)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct imported from its GGUF once per session (tests/smollm2.py): .checkpoint, .step_dir,
    .prompt_ids and transformers' greedy .reference generations."""
    from tests.smollm2 import import_smollm2

    return import_smollm2(str(tmp_path_factory.mktemp("smollm2")))
