"""Fused linear + cross entropy: chunked path (Triton CE in the interpreter) against the unfused reference,
gradients wrt hidden and weight, ignore_index edge cases, and that no [N, V] tensor is ever created."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from megasnow.kernels import linear_cross_entropy
from megasnow.kernels.linear_cross_entropy import default_chunk_size
from tests.kernels.helpers import assert_same_function

N, H, V = 10, 24, 1000 + 7


def _lce(impl, target, **kw):
    return lambda hidden, weight: linear_cross_entropy(hidden, weight, target, impl=impl, **kw)


def _inputs(dtype, ignored=(3,)):
    hidden = torch.randn(N, H, dtype=dtype)
    weight = (torch.randn(V, H) * 0.3).to(dtype)
    target = torch.randint(0, V, (N,))
    target[list(ignored)] = -100
    return hidden, weight, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [4, None])  # ragged chunks (4+4+2); the default rule
def test_linear_cross_entropy_matches_unfused_reference(dtype, chunk_size, poisoned_allocations):
    hidden, weight, target = _inputs(dtype)
    assert_same_function(
        _lce("triton", target, chunk_size=chunk_size), _lce("reference", target), [hidden, weight], dtype,
        f"lce {dtype} chunk={chunk_size}",
    )


def test_linear_cross_entropy_all_ignored_and_auto_on_cpu():
    hidden, weight, _ = _inputs(torch.float32)
    target = torch.full((N,), -100)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, target, impl="triton", chunk_size=3)
    loss.backward()
    assert loss.item() == 0.0 and not h.grad.any() and not w.grad.any()
    # "auto" on CPU runs the chunked path with the torch CE pieces: same function
    _, _, target = _inputs(torch.float32)
    assert_same_function(_lce("auto", target, chunk_size=3), _lce("reference", target), [hidden, weight],
                         torch.float32, "lce auto")


def test_linear_cross_entropy_only_hidden_needs_grad():
    hidden, weight, target = _inputs(torch.float32)
    h = hidden.clone().requires_grad_()
    (linear_cross_entropy(h, weight, target, impl="triton", chunk_size=4) * 3).backward()
    h_ref = hidden.clone().requires_grad_()
    (linear_cross_entropy(h_ref, weight, target, impl="reference") * 3).backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-5, atol=1e-5)


def test_fp32_accumulation_of_the_weight_gradient():
    # bf16 inputs, 1-token chunks: the fp32 accumulator matches an fp32 computation of the same bf16 logits grad
    hidden, weight, target = _inputs(torch.bfloat16)
    w32 = weight.clone().requires_grad_()
    linear_cross_entropy(hidden, w32, target, impl="triton", chunk_size=1, accum_dtype=torch.float32).backward()
    assert w32.grad.dtype == torch.bfloat16
    w_ref = weight.float().requires_grad_()
    linear_cross_entropy(hidden.float(), w_ref, target, impl="reference").backward()
    torch.testing.assert_close(w32.grad.float(), w_ref.grad, rtol=2e-2, atol=1e-3)


class _LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch function returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_full_logits_never_materialised():
    n, h_size = 40, 8  # more tokens than hidden units, so [N, V] is larger than the weight gradient [V, H]
    h = torch.randn(n, h_size, requires_grad=True)
    w = torch.randn(V, h_size, requires_grad=True)
    target = torch.randint(0, V, (n,))
    with _LargestTensor() as fused:
        linear_cross_entropy(h, w, target, impl="triton", chunk_size=4).backward()
    with _LargestTensor() as unfused:
        linear_cross_entropy(h, w, target, impl="reference").backward()
    assert unfused.largest == n * V
    assert fused.largest == max(4 * V, V * h_size) < n * V  # one chunk of logits, or the weight gradient


def test_default_chunk_size_follows_vocab_to_hidden_ratio():
    # 1.3B shapes: V/H = 31.25 -> 32; 65536 tokens -> 2048-token chunks (logits chunk ~ hidden size)
    assert default_chunk_size(65536, 2048, 64000) == 2048
    assert default_chunk_size(5, 2048, 64000) == 1


def test_linear_cross_entropy_shape_errors():
    with pytest.raises(ValueError, match="must be"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 9), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.long), chunk_size=0)
