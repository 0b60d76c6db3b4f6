"""Fixtures for kernel tests: one module-level seed, NaN-poisoned allocations, and the device they run on.

MEGASNOW_TEST_DEVICE=cuda (TRITON_INTERPRET unset or 0) runs these tests on the GPU with the kernels compiled for it:
every tensor a test creates without naming a device is then a CUDA tensor (torch.set_default_device, set before
the test modules are imported so module-level tensors follow too). benchmarks/gpu_suite.sh does this.
"""

import os

import pytest
import torch

TEST_DEVICE = os.environ.get("MEGASNOW_TEST_DEVICE", "cpu")


def pytest_configure(config):
    if TEST_DEVICE not in ("cpu", "cuda"):
        raise pytest.UsageError(f"MEGASNOW_TEST_DEVICE={TEST_DEVICE!r}: use cpu or cuda")
    if TEST_DEVICE == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("MEGASNOW_TEST_DEVICE=cuda but no CUDA device is visible")
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise pytest.UsageError("MEGASNOW_TEST_DEVICE=cuda tests the compiled kernels: unset TRITON_INTERPRET")
        torch.set_default_device("cuda")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture
def poisoned_allocations(monkeypatch):
    """Make torch.empty / torch.empty_like return NaN-filled float tensors while the test runs, so an
    output element that a kernel forgets to write shows up as NaN instead of a lucky zero."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))
    yield
