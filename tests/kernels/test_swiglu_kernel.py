"""SwiGLU Triton kernel (interpreter on CPU) against the pure-torch reference: forward and both gradients."""

import importlib

import pytest
import torch
import torch.nn.functional as F
import triton

from megasnow.kernels import swiglu, swiglu_packed
from megasnow.kernels.swiglu import swiglu_reference
from tests.kernels.helpers import assert_same_function


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 96), (2, 3, 1007)])  # tail of the last 1024-element block
def test_swiglu_triton_matches_reference(dtype, shape, poisoned_allocations):
    gate = torch.randn(shape, dtype=dtype) * 4
    up = torch.randn(shape, dtype=dtype)
    assert_same_function(
        lambda g, u: swiglu(g, u, impl="triton"), lambda g, u: swiglu(g, u, impl="reference"),
        [gate, up], dtype, f"swiglu {dtype} {shape}",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_on_halves_of_a_fused_projection(dtype, poisoned_allocations):
    # gate/up as strided views of one [.., 2F] tensor (what chunk(2) of the fused gate_up matmul gives),
    # and the packed variant that returns one [.., 2F] gradient
    gate_up = torch.randn(2, 3, 2 * 200, dtype=dtype) * 3
    reference = lambda x: swiglu_reference(*x.chunk(2, dim=-1))  # noqa: E731
    assert_same_function(lambda x: swiglu(*x.chunk(2, dim=-1), impl="triton"), reference, [gate_up], dtype,
                         "swiglu views")
    assert_same_function(lambda x: swiglu_packed(x, impl="triton"), reference, [gate_up], dtype, "swiglu packed")
    assert_same_function(lambda x: swiglu_packed(x, impl="reference"), reference, [gate_up], dtype, "packed ref")


def test_swiglu_reference_is_silu_times_up():
    gate, up = torch.randn(5, 200), torch.randn(5, 200)
    torch.testing.assert_close(swiglu_reference(gate, up), F.silu(gate) * up)


def test_swiglu_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="differ"):
        swiglu(torch.randn(2, 8), torch.randn(2, 9))


def test_poisoning_catches_an_unwritten_tail(poisoned_allocations, monkeypatch):
    # the harness itself: launch one program too few and the last block must come back NaN, not zero
    module = importlib.import_module("megasnow.kernels.swiglu")
    monkeypatch.setattr(module, "_grid", lambda rows, cols: (rows, triton.cdiv(cols, module._BLOCK) - 1))
    out = swiglu(torch.randn(3, 1030), torch.randn(3, 1030), impl="triton")
    assert torch.isnan(out[:, 1024:]).all() and not torch.isnan(out[:, :1024]).any()
