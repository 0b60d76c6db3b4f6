"""Fixtures for kernel tests: one module-level seed and NaN-poisoned allocations."""

import pytest
import torch


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
