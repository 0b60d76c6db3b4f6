"""SwiGLU activation: silu(gate) * up, elementwise Triton forward/backward (backward recomputes silu).

Math in fp32 whatever the storage dtype; one flat 1-D launch over all elements.
"""

import torch

from megasnow.kernels._triton import kernel_for, resolve_impl, tl, triton

_BLOCK = 1024


@triton.jit
def _swiglu_forward_kernel(OUT, GATE, UP, n_elements, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    g = tl.load(GATE + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(UP + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + offs, (g * tl.sigmoid(g) * u).to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_backward_kernel(DGATE, DUP, DOUT, GATE, UP, n_elements, BLOCK_SIZE: tl.constexpr):
    # d/dg [g*sig(g)] = sig(g) * (1 + g*(1 - sig(g)))
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    dout = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(GATE + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(UP + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    tl.store(DUP + offs, (dout * silu).to(DUP.dtype.element_ty), mask=mask)
    tl.store(DGATE + offs, (dout * u * sig * (1.0 + g * (1.0 - sig))).to(DGATE.dtype.element_ty), mask=mask)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Pure-torch SwiGLU with the kernel's numerics (fp32 math, one cast)."""
    g = gate.float()
    return (torch.nn.functional.silu(g) * up.float()).to(gate.dtype)


def _grid(n):
    return (triton.cdiv(n, _BLOCK),)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        n = gate.numel()
        kernel_for(_swiglu_forward_kernel, gate.device)[_grid(n)](out, gate, up, n, BLOCK_SIZE=_BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, up = ctx.saved_tensors
        dout = dout.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        kernel_for(_swiglu_backward_kernel, gate.device)[_grid(n)](
            dgate, dup, dout, gate, up, n, BLOCK_SIZE=_BLOCK, num_warps=4
        )
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """silu(gate) * up for same-shape, same-dtype tensors."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)}/{gate.dtype} and up {tuple(up.shape)}/{up.dtype} differ")
    if resolve_impl(impl, gate.device) == "reference":
        return swiglu_reference(gate, up)
    return SwiGLUFunction.apply(gate, up)
