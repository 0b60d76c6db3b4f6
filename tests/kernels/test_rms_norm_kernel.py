"""RMSNorm Triton kernel (interpreter on CPU) against the pure-torch reference: forward and both gradients."""

import pytest
import torch

from megasnow.kernels import rms_norm
from megasnow.kernels.rms_norm import rms_norm_forward, rms_norm_reference
from tests.kernels.helpers import assert_same_function


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 96), (3, 5, 200)])  # single row; hidden not a power of two, 15 rows
def test_rms_norm_triton_matches_reference(dtype, shape, poisoned_allocations):
    x = torch.randn(shape, dtype=dtype) * 3
    w = (1 + 0.1 * torch.randn(shape[-1])).to(dtype)
    assert_same_function(
        lambda a, b: rms_norm(a, b, 1e-5, impl="triton"), lambda a, b: rms_norm(a, b, 1e-5, impl="reference"),
        [x, w], dtype, f"rms_norm {dtype} {shape}",
    )


def test_rms_norm_bf16_input_with_fp32_weight(poisoned_allocations):
    # mixed precision: bf16 activations, fp32 weight -> bf16 output and dx, fp32 dW
    x = torch.randn(4, 200, dtype=torch.bfloat16)
    w = 1 + 0.1 * torch.randn(200)
    assert_same_function(
        lambda a, b: rms_norm(a, b, impl="triton"), lambda a, b: rms_norm(a, b, impl="reference"),
        [x, w], torch.bfloat16, "rms_norm mixed",
    )


def test_rms_norm_statistics_are_fp32_for_bf16_input():
    # rstd is computed and kept in fp32 from bf16 input: equal to a float64 computation to fp32 precision.
    x = (torch.randn(6, 1000) * 5).to(torch.bfloat16)
    _, rstd = rms_norm_forward(x, torch.ones(1000, dtype=torch.bfloat16), 1e-5)
    assert rstd.dtype == torch.float32
    expected = torch.rsqrt(x.double().pow(2).mean(-1) + 1e-5)
    torch.testing.assert_close(rstd.double(), expected, rtol=1e-6, atol=0)


def test_rms_norm_weight_grad_sums_every_row_band():
    # 37 rows over 4 programs: uneven bands; the fp32 partial rows must add up to the exact dW.
    x = torch.randn(37, 96, dtype=torch.float64).float()
    w = torch.randn(96)
    dy = torch.randn(37, 96)
    wt = w.clone().requires_grad_()
    rms_norm(x, wt, impl="triton").backward(dy)
    x_hat = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    expected = (dy.double() * x_hat).sum(0)
    torch.testing.assert_close(wt.grad.double(), expected, rtol=1e-5, atol=1e-5)


def test_rms_norm_non_contiguous_input_and_reference_function():
    base = torch.randn(4, 2, 96)
    x = base[:, 1]  # row stride 192, unit inner stride
    w = torch.randn(96)
    torch.testing.assert_close(rms_norm(x, w, impl="triton"), rms_norm_reference(x, w), rtol=1e-5, atol=1e-5)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(rms_norm_reference(x, w), ref, rtol=1e-5, atol=1e-6)


def test_rms_norm_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="last dim"):
        rms_norm(torch.randn(2, 8), torch.randn(7))
