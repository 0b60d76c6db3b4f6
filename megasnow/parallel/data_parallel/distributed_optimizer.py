"""ZeRO-1 distributed optimizer: fp32 master weights and Adam state sharded across data-parallel ranks.

Each DP rank owns the same-numbered 1/dp slice of every gradient bucket. DDP reduce-scatters gradients
so the rank holds the averaged gradient of exactly its slice; the rank updates the fp32 masters of that
slice (one master segment per parameter piece, so weight decay still follows the parameter), writes them
into the model's parameter buffer, and all-gathers the buffer so every rank has the full updated model.
"""
import torch

from megasnow.parallel.data_parallel.ddp import DistributedDataParallel, all_gather_into
from megasnow.parallel.optimizer import MixedPrecisionOptimizer, _Entry, counts_in_grad_norm


class DistributedOptimizer(MixedPrecisionOptimizer):
    """AdamW over this DP rank's shard; `state_dict()` holds only that shard."""

    norm_group_is_world = True  # shards are disjoint over DP, so the norm sums over every rank

    def _build_entries(self):
        entries = []
        for chunk in self.chunks:
            if not (isinstance(chunk, DistributedDataParallel) and chunk.use_distributed_optimizer):
                raise ValueError("the distributed optimizer needs model chunks wrapped by DistributedDataParallel("
                                 "use_distributed_optimizer=True); build them with build_model and "
                                 "parallel.use_distributed_optimizer=true")
            for bucket in chunk.buckets:
                shard_start, shard_end = chunk.shard_range(bucket)
                for p in bucket.params:
                    start = chunk.param_offset(p)
                    lo, hi = max(start, shard_start), min(start + p.numel(), shard_end)
                    if lo >= hi:
                        continue
                    model_view = chunk.param_buffer[lo:hi]
                    grad_view = chunk.grad_buffer[lo:hi]
                    master = model_view.detach().float().clone()
                    entries.append(_Entry(master, model_view, (lambda g=grad_view: g), counts_in_grad_norm(p),
                                          p.ndim >= 2))
        return entries

    @torch.no_grad()
    def _copy_masters_to_model(self):
        super()._copy_masters_to_model()
        # Every rank wrote its shard into the parameter buffer; gather the other shards.
        for chunk in self.chunks:
            if chunk.dp_size == 1:
                continue
            for bucket in chunk.buckets:
                start, end = chunk.shard_range(bucket)
                shard = chunk.param_buffer[start:end].clone()
                all_gather_into(chunk.param_buffer[bucket.start:bucket.end], shard, chunk.dp_group)
