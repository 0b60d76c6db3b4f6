"""Cross entropy over vocabulary-sharded logits (Megatron's vocab_parallel_cross_entropy).

Each TP rank holds logits for its vocabulary range [vocab_start, vocab_start + Vs). The kernels' partial
statistics (local max, local sum of exp, target logit) are combined with three all-reduces into the exact
log-sum-exp, so the full-vocabulary logits never exist on one rank; the backward is (softmax - onehot) per shard.
"""
import torch
import torch.distributed as dist

from megasnow.kernels.cross_entropy import ce_partial_grad, ce_partial_stats
from megasnow.parallel import state


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, vocab_start, ignore_index, group, impl):
        local_max, local_sumexp, target_logit = ce_partial_stats(logits, target, vocab_start, ignore_index, impl=impl)
        global_max = local_max.clone()
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
        # Rescale every rank's sum of exp to the global max before summing.
        sumexp = local_sumexp * torch.exp(local_max - global_max)
        dist.all_reduce(sumexp, group=group)
        dist.all_reduce(target_logit, group=group)
        lse = global_max + torch.log(sumexp)
        valid = target != ignore_index
        count = valid.sum()
        losses = torch.where(valid, lse - target_logit, torch.zeros_like(lse))
        loss = losses.sum() / count.clamp(min=1)
        ctx.save_for_backward(logits, target, lse, valid, count)
        ctx.vocab_start, ctx.ignore_index, ctx.impl = vocab_start, ignore_index, impl
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target, lse, valid, count = ctx.saved_tensors
        scale = grad_loss.float() / count.clamp(min=1).float()
        grad_scale = valid.float() * scale
        grad = ce_partial_grad(logits, target, ctx.vocab_start, lse, grad_scale, ctx.ignore_index, impl=ctx.impl)
        return grad, None, None, None, None, None


def vocab_parallel_cross_entropy(logits_shard, target, vocab_start=None, ignore_index=-100, impl="auto"):
    """Mean cross entropy over non-ignored targets (0 if none) from this rank's logits shard [N, Vs].

    `vocab_start` defaults to rank * Vs (equal shards). Columns of padded vocabulary rows should be sliced
    off by the caller (pass the shard's valid columns only and its true vocab_start).
    """
    if logits_shard.dim() != 2 or target.dim() != 1 or target.shape[0] != logits_shard.shape[0]:
        raise ValueError(f"expected logits [N, Vs] and target [N], got {tuple(logits_shard.shape)} and "
                         f"{tuple(target.shape)}")
    if vocab_start is None:
        vocab_start = state.get_tensor_parallel_rank() * logits_shard.shape[1]
    if state.get_tensor_parallel_world_size() == 1:
        from megasnow.kernels.cross_entropy import cross_entropy

        return cross_entropy(logits_shard, target, ignore_index=ignore_index, impl=impl)
    return _VocabParallelCrossEntropy.apply(logits_shard, target, int(vocab_start), ignore_index,
                                            state.get_tensor_parallel_group(), impl)
