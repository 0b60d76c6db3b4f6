"""Test-wide setup: Triton runs in its interpreter (set before triton imports) unless the tests target a GPU
(MEGASNOW_TEST_DEVICE=cuda, see tests/kernels/conftest.py), nothing is downloaded, and `require_anchor` for the
tests that compare with a reference implementation."""
import importlib
import os

import pytest

if os.environ.get("MEGASNOW_TEST_DEVICE", "cpu") != "cuda":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The openai SDK builds its response models' pydantic schemas lazily, at first use, and that build is not
# thread-safe: tests whose client threads parse their first Completion at the same moment (one batch answers them
# all) failed with PydanticUserError "BaseModel cannot be instantiated directly". Build them at import instead.
os.environ.setdefault("DEFER_PYDANTIC_BUILD", "false")


def under_ci():
    """True when CI=true (or 1/yes): what CI services set, and what .ci/run sets when they do not."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def anchor_missing(package, reason=""):
    """A reference implementation is not installed: skip locally, fail under CI (a comparison never skips there).

    Works at module level too (a test file that imports the anchor at the top).
    """
    message = (f"anchor {package} is not available{f' ({reason})' if reason else ''}; it is a test requirement: "
               f"pip install -r requirements-test.txt")
    if under_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_anchor(module, package=None):
    """Import and return `module` (e.g. "megatron.core.datasets.indexed_dataset"), the reference a test compares
    against; when it cannot be imported: skip, or fail under CI. `package` names the pip package in the message."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        anchor_missing(package or module.split(".")[0], f"import {module}: {e}")

@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct imported from its GGUF once per session (tests/smollm2.py): .checkpoint, .step_dir,
    .prompt_ids and transformers' greedy .reference generations."""
    from tests.smollm2 import import_smollm2

    return import_smollm2(str(tmp_path_factory.mktemp("smollm2")))
