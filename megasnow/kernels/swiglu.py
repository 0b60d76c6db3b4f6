"""SwiGLU activation: silu(gate) * up, Triton forward/backward (backward recomputes silu).

Math in fp32 whatever the storage dtype. Rows may be strided, so gate and up can be the two halves of one
fused gate_up projection without copies; `swiglu_packed` takes that [..., 2F] tensor and returns one packed
gradient, which saves the concatenation autograd would otherwise do for `chunk`.
"""

import torch

from megasnow.kernels._triton import kernel_for, resolve_impl, tl, triton

_BLOCK = 1024


@triton.jit
def _swiglu_forward_kernel(
    OUT, out_row_stride, GATE, gate_row_stride, UP, up_row_stride, n_cols, BLOCK_SIZE: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    g = tl.load(GATE + row * gate_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(UP + row * up_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + row * out_row_stride + cols, (g * tl.sigmoid(g) * u).to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_backward_kernel(
    DGATE, dgate_row_stride, DUP, dup_row_stride, DOUT, dout_row_stride, GATE, gate_row_stride, UP, up_row_stride,
    n_cols, BLOCK_SIZE: tl.constexpr,
):
    # d/dg [g*sig(g)] = sig(g) * (1 + g*(1 - sig(g)))
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    dout = tl.load(DOUT + row * dout_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(GATE + row * gate_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(UP + row * up_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    tl.store(DUP + row * dup_row_stride + cols, (dout * g * sig).to(DUP.dtype.element_ty), mask=mask)
    dg = dout * u * sig * (1.0 + g * (1.0 - sig))
    tl.store(DGATE + row * dgate_row_stride + cols, dg.to(DGATE.dtype.element_ty), mask=mask)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Pure-torch SwiGLU with the kernel's numerics (fp32 math, one cast)."""
    g = gate.float()
    return (torch.nn.functional.silu(g) * up.float()).to(gate.dtype)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[..., F] -> [rows, F] view (a copy only if rows cannot be expressed with one stride)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _grid(n_rows: int, n_cols: int):
    return (n_rows, triton.cdiv(n_cols, _BLOCK))


def swiglu_forward(gate2d, up2d):
    n_rows, n_cols = gate2d.shape
    out = torch.empty((n_rows, n_cols), dtype=gate2d.dtype, device=gate2d.device)
    if n_rows and n_cols:
        kernel_for(_swiglu_forward_kernel, gate2d.device)[_grid(n_rows, n_cols)](
            out, out.stride(0), gate2d, gate2d.stride(0), up2d, up2d.stride(0), n_cols, BLOCK_SIZE=_BLOCK, num_warps=4
        )
    return out


def swiglu_backward(dout2d, gate2d, up2d, dgate2d, dup2d):
    n_rows, n_cols = gate2d.shape
    if n_rows and n_cols:
        kernel_for(_swiglu_backward_kernel, gate2d.device)[_grid(n_rows, n_cols)](
            dgate2d, dgate2d.stride(0), dup2d, dup2d.stride(0), dout2d, dout2d.stride(0),
            gate2d, gate2d.stride(0), up2d, up2d.stride(0), n_cols, BLOCK_SIZE=_BLOCK, num_warps=4,
        )


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate2d, up2d = _rows(gate), _rows(up)
        ctx.save_for_backward(gate2d, up2d)
        return swiglu_forward(gate2d, up2d).view(gate.shape)

    @staticmethod
    def backward(ctx, dout):
        gate2d, up2d = ctx.saved_tensors
        dgate, dup = torch.empty_like(gate2d, memory_format=torch.contiguous_format), torch.empty_like(
            up2d, memory_format=torch.contiguous_format
        )
        swiglu_backward(_rows(dout), gate2d, up2d, dgate, dup)
        return dgate.view(dout.shape), dup.view(dout.shape)


class PackedSwiGLUFunction(torch.autograd.Function):
    """silu(x[..., :F]) * x[..., F:] for x = [..., 2F]; the gradient comes back as one [..., 2F] tensor."""

    @staticmethod
    def forward(ctx, gate_up):
        gate_up2d = _rows(gate_up)
        half = gate_up2d.shape[1] // 2
        ctx.save_for_backward(gate_up2d)
        return swiglu_forward(gate_up2d[:, :half], gate_up2d[:, half:]).view(*gate_up.shape[:-1], half)

    @staticmethod
    def backward(ctx, dout):
        (gate_up2d,) = ctx.saved_tensors
        half = gate_up2d.shape[1] // 2
        grad = torch.empty(gate_up2d.shape, dtype=gate_up2d.dtype, device=gate_up2d.device)
        swiglu_backward(_rows(dout), gate_up2d[:, :half], gate_up2d[:, half:], grad[:, :half], grad[:, half:])
        return grad.view(*dout.shape[:-1], 2 * half)


def swiglu(gate: torch.Tensor, up: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """silu(gate) * up for same-shape, same-dtype tensors (strided rows are read in place)."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)}/{gate.dtype} and up {tuple(up.shape)}/{up.dtype} differ")
    if resolve_impl(impl, gate.device) == "reference":
        return swiglu_reference(gate, up)
    return SwiGLUFunction.apply(gate, up)


def swiglu_packed(gate_up: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """silu(gate) * up where gate_up = cat([gate, up], -1) is [..., 2F] (a fused gate/up projection's output)."""
    if gate_up.shape[-1] % 2:
        raise ValueError(f"swiglu_packed: last dim must be even (gate and up halves), got {gate_up.shape[-1]}")
    if resolve_impl(impl, gate_up.device) == "reference":
        gate, up = gate_up.chunk(2, dim=-1)
        return swiglu_reference(gate, up)
    return PackedSwiGLUFunction.apply(gate_up)
