"""Test-wide setup: Triton runs in its interpreter (set before triton imports), unless the tests target a GPU
(MEGASNOW_TEST_DEVICE=cuda, see tests/kernels/conftest.py), where the kernels are compiled for it."""
import os

if os.environ.get("MEGASNOW_TEST_DEVICE", "cpu") != "cuda":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
