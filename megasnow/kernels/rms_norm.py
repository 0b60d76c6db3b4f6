"""RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, Triton forward/backward with fp32 statistics.

The weight gradient is reduced in two steps: each program walks a contiguous band of rows keeping a
fp32 partial dW row in registers, writes it out, and a final torch sum adds the partial rows.
"""

import torch

from megasnow.kernels._triton import kernel_for, num_programs_for_partials, resolve_impl, row_block_settings, tl, triton


@triton.jit
def _rms_norm_forward_kernel(
    Y, Y_row_stride, X, X_row_stride, W, RSTD, n_cols, eps, BLOCK_SIZE: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    x = tl.load(X + row * X_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * Y_row_stride + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_backward_kernel(
    DX, DX_row_stride, DY, DY_row_stride, X, X_row_stride, W, RSTD, DW_PARTIAL,
    n_rows, n_cols, rows_per_program, BLOCK_SIZE: tl.constexpr,
):
    # dx = rstd * (dy*w - x_hat * mean(dy*w*x_hat)),  dW = sum_rows dy * x_hat   (x_hat = x * rstd)
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for row in range(row_start, row_end):
        x = tl.load(X + row * X_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * DY_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        dyw = dy * w
        dx = rstd * (dyw - x_hat * (tl.sum(dyw * x_hat, axis=0) / n_cols))
        tl.store(DX + row * DX_row_stride + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * x_hat
    tl.store(DW_PARTIAL + pid * n_cols + cols, dw_acc, mask=mask)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Pure-torch RMSNorm with the kernel's numerics: everything in fp32, one cast at the end."""
    x32 = x.float()
    rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * rstd * weight.float()).to(x.dtype)


def rms_norm_forward(x2d: torch.Tensor, weight: torch.Tensor, eps: float):
    n_rows, n_cols = x2d.shape
    block, num_warps = row_block_settings(n_cols)
    y = torch.empty_like(x2d)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x2d.device)
    kernel_for(_rms_norm_forward_kernel, x2d.device)[(n_rows,)](
        y, y.stride(0), x2d, x2d.stride(0), weight, rstd, n_cols, eps, BLOCK_SIZE=block, num_warps=num_warps
    )
    return y, rstd


def rms_norm_backward(dy2d: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    n_rows, n_cols = x2d.shape
    block, num_warps = row_block_settings(n_cols)
    n_programs = num_programs_for_partials(n_rows, x2d.device)
    rows_per_program = triton.cdiv(n_rows, n_programs)
    dx = torch.empty_like(x2d)
    dw_partial = torch.empty((n_programs, n_cols), dtype=torch.float32, device=x2d.device)
    kernel_for(_rms_norm_backward_kernel, x2d.device)[(n_programs,)](
        dx, dx.stride(0), dy2d, dy2d.stride(0), x2d, x2d.stride(0), weight, rstd, dw_partial,
        n_rows, n_cols, rows_per_program, BLOCK_SIZE=block, num_warps=num_warps,
    )
    return dx, dw_partial.sum(0).to(weight.dtype)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x2d = _as_rows(x)
        y, rstd = rms_norm_forward(x2d, weight.contiguous(), eps)
        ctx.save_for_backward(x2d, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2d, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_backward(_as_rows(dy), x2d, weight.contiguous(), rstd)
        return dx.view(dy.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5, impl: str = "auto") -> torch.Tensor:
    """RMSNorm over the last dim of `x` [..., H] with `weight` [H]; output in x's dtype."""
    if x.shape[-1] != weight.shape[-1] or weight.dim() != 1:
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} does not match x's last dim {x.shape[-1]}")
    if resolve_impl(impl, x.device) == "reference":
        return rms_norm_reference(x, weight, eps)
    return RMSNormFunction.apply(x, weight, eps)
