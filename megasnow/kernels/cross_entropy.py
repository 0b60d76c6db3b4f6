"""Cross entropy over a vocabulary: online-softmax Triton kernels, built from vocab-parallel pieces.

`ce_partial_stats` (per-row max, sum-exp and target logit of one vocabulary shard) and `ce_partial_grad`
((softmax - onehot) * scale of one shard) are what tensor-parallel CE all-reduces between; the full
`cross_entropy` is the one-shard case. Logits are streamed in vocabulary blocks, never upcast whole.
"""

import torch

from megasnow.kernels._triton import kernel_for, resolve_impl, row_block_settings, tl, triton

# Largest vocabulary block per loop step: Liger's tuning for H100 (32768 wide, 32 warps; bandwidth-bound),
# i.e. two steps over a 64k vocabulary.
_MAX_BLOCK_V = 32768


@triton.jit
def _ce_stats_kernel(
    LOGITS, logits_row_stride, TARGET, MAX_OUT, SUMEXP_OUT, TARGET_LOGIT_OUT,
    n_cols, vocab_start, ignore_index, BLOCK_V: tl.constexpr,
):
    # Online softmax: keep a running max m and sum d = sum exp(x - m), rescaling d when m grows.
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * logits_row_stride
    m = float("-inf")
    d = 0.0
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    tl.store(MAX_OUT + row, m)
    tl.store(SUMEXP_OUT + row, d)

    target = tl.load(TARGET + row).to(tl.int64)
    local = target - vocab_start
    in_shard = (target != ignore_index) & (local >= 0) & (local < n_cols)
    safe_local = tl.where(in_shard, local, 0)
    target_logit = tl.load(row_ptr + safe_local, mask=in_shard, other=0.0).to(tl.float32)
    tl.store(TARGET_LOGIT_OUT + row, tl.where(in_shard, target_logit, 0.0))


@triton.jit
def _ce_grad_kernel(
    GRAD, grad_row_stride, LOGITS, logits_row_stride, TARGET, LSE, GRAD_SCALE,
    n_cols, vocab_start, ignore_index, BLOCK_V: tl.constexpr,
):
    # grad = (exp(x - lse) - onehot(target)) * scale; GRAD may alias LOGITS (each block is read before written).
    row = tl.program_id(0).to(tl.int64)
    logits_ptr = LOGITS + row * logits_row_stride
    grad_ptr = GRAD + row * grad_row_stride
    lse = tl.load(LSE + row)
    scale = tl.load(GRAD_SCALE + row)
    target = tl.load(TARGET + row).to(tl.int64)
    local = tl.where(target == ignore_index, -1, target - vocab_start)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < n_cols
        x = tl.load(logits_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.exp(x - lse) - tl.where(cols == local, 1.0, 0.0)
        tl.store(grad_ptr + cols, (g * scale).to(GRAD.dtype.element_ty), mask=mask)


def _block_settings(n_cols: int):
    """(BLOCK_V, num_warps) for streaming a row of n_cols logits."""
    return row_block_settings(min(_MAX_BLOCK_V, triton.next_power_of_2(n_cols)))


def _rows(logits: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2:
        raise ValueError(f"cross entropy expects logits [N, V], got shape {tuple(logits.shape)}")
    return logits if logits.stride(1) == 1 else logits.contiguous()


def _check_target(logits, target):
    if logits.dim() != 2:
        raise ValueError(f"cross entropy expects logits [N, V], got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"cross entropy: target {tuple(target.shape)} must be [N] with N = {logits.shape[0]}")


# ---------------------------------------------------------------------------------------------
# Vocabulary-parallel building blocks (also the full-vocabulary CE with vocab_start = 0)
# ---------------------------------------------------------------------------------------------


def ce_partial_stats_reference(logits_shard, target, vocab_start: int, ignore_index: int = -100):
    x = logits_shard.float()
    local_max = x.max(dim=1).values
    local_sumexp = torch.exp(x - local_max[:, None]).sum(dim=1)
    local = target.long() - vocab_start
    in_shard = (target != ignore_index) & (local >= 0) & (local < x.shape[1])
    picked = x.gather(1, torch.where(in_shard, local, 0)[:, None]).squeeze(1)
    return local_max, local_sumexp, torch.where(in_shard, picked, torch.zeros_like(picked))


def ce_partial_stats(logits_shard, target, vocab_start: int, ignore_index: int = -100, impl: str = "auto"):
    """(local_max, local_sumexp, target_logit), all fp32 [N], for logits_shard [N, Vs] covering
    vocabulary ids [vocab_start, vocab_start + Vs). sum-exp is relative to local_max; target_logit is 0
    where the target is ignored or lies in another shard."""
    _check_target(logits_shard, target)
    if resolve_impl(impl, logits_shard.device) == "reference":
        return ce_partial_stats_reference(logits_shard, target, vocab_start, ignore_index)
    logits_shard = _rows(logits_shard)
    n_rows, n_cols = logits_shard.shape
    stats = torch.empty((3, n_rows), dtype=torch.float32, device=logits_shard.device)
    if n_rows:
        block_v, num_warps = _block_settings(n_cols)
        kernel_for(_ce_stats_kernel, logits_shard.device)[(n_rows,)](
            logits_shard, logits_shard.stride(0), target.contiguous(), stats[0], stats[1], stats[2],
            n_cols, vocab_start, ignore_index, BLOCK_V=block_v, num_warps=num_warps,
        )
    return stats[0], stats[1], stats[2]


def ce_partial_grad_reference(logits_shard, target, vocab_start, lse, grad_scale, ignore_index: int = -100):
    probs = torch.exp(logits_shard.float() - lse[:, None])
    local = target.long() - vocab_start
    in_shard = (target != ignore_index) & (local >= 0) & (local < logits_shard.shape[1])
    rows = torch.nonzero(in_shard).squeeze(1)
    probs[rows, local[rows]] -= 1.0
    return (probs * grad_scale[:, None]).to(logits_shard.dtype)


def ce_partial_grad(
    logits_shard, target, vocab_start: int, lse, grad_scale, ignore_index: int = -100,
    impl: str = "auto", out: torch.Tensor | None = None,
):
    """(softmax - onehot(target)) * grad_scale[:, None] for one vocabulary shard, in logits dtype.

    lse is the global fp32 log-sum-exp [N]; grad_scale fp32 [N] (0 for ignored rows). `out` may be
    logits_shard itself to write the gradient in place (only when nothing else needs the logits).
    """
    _check_target(logits_shard, target)
    if resolve_impl(impl, logits_shard.device) == "reference":
        grad = ce_partial_grad_reference(logits_shard, target, vocab_start, lse, grad_scale, ignore_index)
        return out.copy_(grad) if out is not None else grad
    logits_shard = _rows(logits_shard)
    n_rows, n_cols = logits_shard.shape
    grad = torch.empty_like(logits_shard) if out is None else out
    if grad.stride(1) != 1:
        raise ValueError("ce_partial_grad: `out` must have a unit stride along the vocabulary")
    if n_rows:
        block_v, num_warps = _block_settings(n_cols)
        kernel_for(_ce_grad_kernel, logits_shard.device)[(n_rows,)](
            grad, grad.stride(0), logits_shard, logits_shard.stride(0), target.contiguous(),
            lse.float().contiguous(), grad_scale.float().contiguous(),
            n_cols, vocab_start, ignore_index, BLOCK_V=block_v, num_warps=num_warps,
        )
    return grad


# ---------------------------------------------------------------------------------------------
# Full-vocabulary cross entropy
# ---------------------------------------------------------------------------------------------


def cross_entropy_reference(logits, target, ignore_index: int = -100):
    """Mean CE over targets != ignore_index in fp32 (0 when every target is ignored)."""
    n_valid = (target != ignore_index).sum().clamp(min=1)
    loss_sum = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return loss_sum / n_valid


def ce_loss_and_lse(logits, target, ignore_index: int, impl: str):
    """Per-row loss (0 for ignored rows) and lse, fp32 [N], streaming the logits once."""
    local_max, local_sumexp, target_logit = ce_partial_stats(logits, target, 0, ignore_index, impl=impl)
    lse = local_max + torch.log(local_sumexp)
    loss_rows = torch.where(target != ignore_index, lse - target_logit, torch.zeros_like(lse))
    return loss_rows, lse


class CrossEntropyFunction(torch.autograd.Function):
    """Forward streams the logits once for (max, sum-exp, target logit); backward streams them once
    more and writes one logits-sized gradient (into the logits buffer itself when inplace_grad)."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, inplace_grad):
        logits = _rows(logits)
        valid = target != ignore_index
        n_valid = valid.sum().clamp(min=1).float()
        loss_rows, lse = ce_loss_and_lse(logits, target, ignore_index, "triton")
        ctx.save_for_backward(logits, target, lse, valid, n_valid)
        ctx.ignore_index, ctx.inplace_grad = ignore_index, inplace_grad
        return loss_rows.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_output):
        logits, target, lse, valid, n_valid = ctx.saved_tensors
        grad_scale = valid.float() * (grad_output.float() / n_valid)
        out = logits if ctx.inplace_grad else None
        grad = ce_partial_grad(logits, target, 0, lse, grad_scale, ctx.ignore_index, impl="triton", out=out)
        return grad, None, None, None


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, impl: str = "auto",
    inplace_grad: bool = False,
) -> torch.Tensor:
    """Scalar mean cross entropy of logits [N, V] against target [N] over targets != ignore_index.

    inplace_grad=True writes the gradient into the logits' storage during backward (saves one
    logits-sized buffer); only safe when nothing else reads those logits afterwards.
    """
    _check_target(logits, target)
    if inplace_grad and logits.is_leaf and logits.requires_grad:
        raise ValueError("cross_entropy: inplace_grad=True would overwrite a leaf tensor (a parameter or input); "
                         "use it only for logits produced by an op")
    if resolve_impl(impl, logits.device) == "reference":
        return cross_entropy_reference(logits, target, ignore_index)
    return CrossEntropyFunction.apply(logits, target, ignore_index, inplace_grad)
