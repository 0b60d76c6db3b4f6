"""AdamW with fp32 master weights and clipping by the true global gradient norm across TP, PP and DP.

`build_optimizer` returns the plain optimizer (every DP rank holds all master weights and Adam state) or
the ZeRO-1 `DistributedOptimizer` (each DP rank holds its shard). Both read the fp32 `main_grad` buffers
that `DistributedDataParallel` fills, skip the update when the norm is NaN/Inf, and leave 1-D parameters
(norm weights, biases) out of weight decay.
"""
import math

import torch
import torch.distributed as dist

from megasnow.parallel import state


def build_optimizer(model_chunks, lr, weight_decay=0.0, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0,
                    use_distributed_optimizer=False):
    """Optimizer over this rank's model chunks; `.step() -> (updated, grad_norm)`."""
    if use_distributed_optimizer:
        from megasnow.parallel.data_parallel.distributed_optimizer import DistributedOptimizer

        return DistributedOptimizer(model_chunks, lr, weight_decay, betas, eps, clip_grad)
    return MixedPrecisionOptimizer(model_chunks, lr, weight_decay, betas, eps, clip_grad)


def counts_in_grad_norm(param):
    """Whether this rank's copy of `param` adds to the global norm: each distinct element counted once.

    Parameters replicated over TP (norms, biases; not split by a parallel layer) count on TP rank 0
    only, and the last stage's copy of a tied embedding counts on the first stage only.
    """
    if getattr(param, "shared_embedding_replica", False):
        return False
    replicated = getattr(param, "tensor_parallel_dim", None) is None
    return not (replicated and state.get_tensor_parallel_rank() > 0)


class MixedPrecisionOptimizer:
    """AdamW over all of this rank's parameters with fp32 master weights (the parameters themselves if fp32)."""

    norm_group_is_world = False  # the plain optimizer's grads are already identical over DP

    def __init__(self, model_chunks, lr, weight_decay=0.0, betas=(0.9, 0.95), eps=1e-8, clip_grad=1.0):
        self.chunks = list(model_chunks)
        self.clip_grad = clip_grad
        # entries: (master fp32 tensor, model tensor to copy into or None, grad getter, counts in norm)
        self.entries = self._build_entries()
        decay = [e.master for e in self.entries if e.decay]
        no_decay = [e.master for e in self.entries if not e.decay]
        groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)  # foreach on GPU

    def _build_entries(self):
        entries = []
        for chunk in self.chunks:
            for p in chunk.parameters():
                if not p.requires_grad:
                    continue
                if p.dtype == torch.float32:
                    master, model_view = p, None
                else:
                    master, model_view = p.detach().float().clone(), p
                entries.append(_Entry(master, model_view, _full_grad(p), counts_in_grad_norm(p), p.ndim >= 2))
        return entries

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def reset_state(self):
        """Forget the Adam moments and step counts (a new training phase) but keep the fp32 masters."""
        self.optimizer.state.clear()

    def zero_grad(self):
        for chunk in self.chunks:
            if hasattr(chunk, "zero_grad_buffer"):
                chunk.zero_grad_buffer()
            else:
                chunk.zero_grad(set_to_none=True)

    def step(self):
        """Clip by the global norm and update; returns (updated, grad_norm). NaN/Inf norm: no update."""
        grads = [e.grad() for e in self.entries]
        for e, g in zip(self.entries, grads):
            e.master.grad = g
        try:
            norm = self._global_grad_norm([g for e, g in zip(self.entries, grads) if e.counts_in_norm])
            if not math.isfinite(norm):
                return False, norm
            if self.clip_grad and self.clip_grad > 0 and norm > self.clip_grad:
                scale = self.clip_grad / (norm + 1e-6)
                for g in grads:
                    if g is not None:
                        g.mul_(scale)
            self.optimizer.step()
        finally:
            for e in self.entries:
                e.master.grad = None  # grads live in the DDP buffers; never let autograd accumulate into them
        self._copy_masters_to_model()
        return True, norm

    def _global_grad_norm(self, grads):
        device = self.entries[0].master.device if self.entries else torch.device("cpu")
        grads = [g.detach() for g in grads if g is not None and g.numel()]
        total = torch.zeros(1, dtype=torch.float64, device=device)
        if grads:
            # Per-tensor fp32 norms (one fused kernel on GPU), squared and summed in fp64; no host sync until the end.
            total += torch.stack(torch._foreach_norm(grads)).double().pow(2).sum()
        if dist.is_initialized() and state.get_world_size() > 1:
            group = None if self.norm_group_is_world else state.get_model_parallel_group()
            dist.all_reduce(total, group=group)
        return float(total.sqrt())

    @torch.no_grad()
    def _copy_masters_to_model(self):
        for e in self.entries:
            if e.model_view is not None:
                e.model_view.copy_(e.master)

    def state_dict(self):
        """Adam state and separate fp32 masters of this rank (fp32 parameters are their own masters)."""
        return {"optimizer": self.optimizer.state_dict(),
                "masters": [e.master.detach().clone() if e.model_view is not None else None for e in self.entries]}

    @torch.no_grad()
    def load_state_dict(self, sd):
        if len(sd["masters"]) != len(self.entries):
            raise ValueError(f"optimizer state has {len(sd['masters'])} parameters, this model has {len(self.entries)}"
                             " (different model or parallel layout?)")
        self.optimizer.load_state_dict(sd["optimizer"])
        for e, m in zip(self.entries, sd["masters"]):
            if m is not None:
                e.master.copy_(m)
        self._copy_masters_to_model()


class _Entry:
    __slots__ = ("master", "model_view", "grad", "counts_in_norm", "decay")

    def __init__(self, master, model_view, grad, counts_in_norm, decay):
        self.master, self.model_view, self.grad = master, model_view, grad
        self.counts_in_norm, self.decay = counts_in_norm, decay


def _full_grad(p):
    """Getter for p's fp32 gradient: the DDP main_grad buffer view, else autograd's .grad."""
    def get():
        g = getattr(p, "main_grad", None)
        if g is not None:
            return g
        return None if p.grad is None else p.grad.float()
    return get
