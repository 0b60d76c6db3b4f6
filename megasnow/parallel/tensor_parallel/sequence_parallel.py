"""Gradient sync for sequence parallelism: replicated parameters that only saw this rank's tokens.

Under sequence parallelism the norms (and any bias after a row-parallel reduce-scatter) run on sequence
shards, so each TP rank's gradient for them is partial. Call `allreduce_sequence_parallel_grads(modules)`
after backward and before gradient clipping / the data-parallel reduction (the pipeline schedules'
`finalize_model_grads` does).
"""
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from megasnow.parallel import state


def sequence_parallel_params(modules):
    """Parameters marked `sequence_parallel=True` in a module or a list of modules (model chunks)."""
    if isinstance(modules, torch.nn.Module):
        modules = [modules]
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if getattr(p, "sequence_parallel", False) and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def allreduce_sequence_parallel_grads(modules):
    """Sum the gradients of sequence-parallel parameters over the TP group (uses `main_grad` when present)."""
    if state.get_tensor_parallel_world_size() == 1:
        return
    grads = []
    for p in sequence_parallel_params(modules):
        g = getattr(p, "main_grad", None)
        if g is None:
            g = p.grad
        if g is not None:
            grads.append(g)
    if not grads:
        return
    group = state.get_tensor_parallel_group()
    # One flat all-reduce per dtype.
    by_dtype = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for same in by_dtype.values():
        flat = _flatten_dense_tensors(same)
        dist.all_reduce(flat, group=group)
        for g, synced in zip(same, _unflatten_dense_tensors(flat, same)):
            g.copy_(synced)
