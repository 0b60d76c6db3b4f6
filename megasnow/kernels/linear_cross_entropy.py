"""Fused output projection + cross entropy, chunked over tokens so the [N, V] logits never exist at once.

Liger's FusedLinearCrossEntropy approach: the forward computes, chunk by chunk, the logits, the CE
statistics, the logits gradient (written in place over the chunk's logits) and from it the gradients
wrt hidden and weight; the backward only scales those by grad_output.
"""

import torch

from megasnow.kernels._triton import resolve_impl, triton
from megasnow.kernels.cross_entropy import ce_loss_and_lse, ce_partial_grad, cross_entropy_reference


def default_chunk_size(n_tokens: int, hidden_size: int, vocab_size: int) -> int:
    """Tokens per chunk so one chunk of logits is about as large as the whole hidden input (Liger's rule)."""
    inc_factor = triton.cdiv(vocab_size, hidden_size)
    return max(1, triton.next_power_of_2(triton.cdiv(n_tokens, inc_factor)))


def linear_cross_entropy_reference(hidden, weight, target, ignore_index: int = -100):
    """Unfused: full logits = hidden @ weight.T in the input dtype, then fp32 mean CE."""
    return cross_entropy_reference(hidden @ weight.t(), target, ignore_index)


def fused_linear_cross_entropy_forward(
    hidden, weight, target, ignore_index, chunk_size, impl, need_grads=(True, True), accum_dtype=None
):
    """Loss and (grad_hidden, grad_weight) of mean CE (grads None where not needed), chunk by chunk."""
    hidden, weight = hidden.contiguous(), weight.contiguous()
    n_tokens = hidden.shape[0]
    need_grad_hidden, need_grad_weight = need_grads
    valid = target != ignore_index
    n_valid = valid.sum().clamp(min=1).float()
    row_scale = valid.float() / n_valid
    grad_hidden = torch.empty_like(hidden) if need_grad_hidden else None
    # accumulated with addmm_ in the weight's dtype by default (as Liger does); accum_dtype=torch.float32
    # trades a [V, H] fp32 buffer and fp32 GEMMs for exact accumulation across chunks
    accum_dtype = accum_dtype or weight.dtype
    grad_weight = torch.zeros(weight.shape, dtype=accum_dtype, device=weight.device) if need_grad_weight else None
    loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, n_tokens, chunk_size):
        end = min(start + chunk_size, n_tokens)
        hidden_c, target_c = hidden[start:end], target[start:end]
        logits_c = hidden_c @ weight.t()
        loss_rows, lse = ce_loss_and_lse(logits_c, target_c, ignore_index, impl)
        loss_sum += loss_rows.sum()
        if not (need_grad_hidden or need_grad_weight):
            continue
        # the chunk's logits are ours alone: overwrite them with their gradient
        grad_logits_c = ce_partial_grad(
            logits_c, target_c, 0, lse, row_scale[start:end], ignore_index, impl=impl, out=logits_c
        )
        if need_grad_hidden:
            torch.mm(grad_logits_c, weight, out=grad_hidden[start:end])
        if need_grad_weight:
            grad_weight.addmm_(grad_logits_c.t().to(accum_dtype), hidden_c.to(accum_dtype))
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return loss_sum / n_valid, grad_hidden, grad_weight


class LinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target, ignore_index, chunk_size, impl, accum_dtype):
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        loss, grad_hidden, grad_weight = fused_linear_cross_entropy_forward(
            hidden, weight, target, ignore_index, chunk_size, impl, needs, accum_dtype
        )
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        # scaling skipped in the common case (loss.backward() directly on this loss)
        if not torch.equal(grad_output, torch.ones_like(grad_output)):
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None
            grad_weight = grad_weight * grad_output.to(grad_weight.dtype) if grad_weight is not None else None
        return grad_hidden, grad_weight, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
    impl: str = "auto", chunk_size: int | None = None, accum_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean CE of (hidden [N, H] @ weight[V, H].T) against target [N], never materialising all logits.

    chunk_size: tokens per chunk (default: one chunk of logits ~ the size of hidden). accum_dtype: dtype of the
    weight-gradient accumulator across chunks (default the weight's dtype; torch.float32 for exact sums).

    impl="reference" is the unfused path (full logits); "triton" / "auto"-on-CUDA run the chunked path
    with the Triton CE kernels (on CPU, "auto" runs the chunked path with the torch CE pieces).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} "
                         "must be [N, H] and [V, H]")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"linear_cross_entropy: target {tuple(target.shape)} must be [{hidden.shape[0]}]")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}")
    resolved = resolve_impl(impl, hidden.device)
    if impl == "reference":
        return linear_cross_entropy_reference(hidden, weight, target, ignore_index)
    if chunk_size is None:
        chunk_size = default_chunk_size(hidden.shape[0], hidden.shape[1], weight.shape[0])
    return LinearCrossEntropyFunction.apply(hidden, weight, target, ignore_index, chunk_size, resolved, accum_dtype)
