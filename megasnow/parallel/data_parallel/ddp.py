"""Data parallelism: fp32 gradient buckets reduced over data-parallel ranks while backward is still running.

Each parameter accumulates its gradient into `param.main_grad`, a view of one contiguous fp32 buffer
split into buckets (in reverse parameter order, roughly the order backward produces them). When every
parameter of a bucket has its gradient for the step, the bucket's averaged all-reduce (or, for the
distributed optimizer, reduce-scatter) is launched asynchronously, overlapping the rest of backward.
Gradients that must first be summed across pipeline stages (tied embeddings) or tensor ranks
(sequence-parallel norms) sit in a last bucket reduced only in `finish_grad_sync`, after those sums.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn

from megasnow.parallel import state


def _reduce_scatter(output, input, group, async_op):
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(output, input, group=group, async_op=async_op)


def all_gather_into(output, input, group, async_op=False):
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(output, input, group=group, async_op=async_op)


def needs_cross_rank_sum(param):
    """Gradients summed over another group before the DP reduction (see module docstring)."""
    return getattr(param, "shared_embedding", False) or getattr(param, "sequence_parallel", False)


class Bucket:
    """A contiguous slice of the gradient buffer (length a multiple of the DP size) and its parameters."""

    def __init__(self, index, params, start, end, deferred):
        self.index, self.params, self.start, self.end = index, params, start, end
        self.deferred = deferred  # reduced only in finish_grad_sync
        self.pending = set()
        self.work = None
        self.shard_out = None  # reduce-scatter output (distributed optimizer)

    @property
    def launched(self):
        return self.work is not None


class DistributedDataParallel(nn.Module):
    """Wrap one model chunk: gradients go to fp32 `main_grad` buffers, averaged over the DP group.

    `use_distributed_optimizer` reduce-scatters instead of all-reducing (each DP rank keeps the reduced
    gradient of its shard of every bucket) and keeps the parameters in one contiguous buffer per chunk so
    the optimizer can all-gather updated shards in place. Checkpoint names are the wrapped module's.
    """

    def __init__(self, module, parallel_cfg=None, bucket_size_mb=25.0, overlap_grad_reduce=True,
                 use_distributed_optimizer=False, data_parallel_group=None, data_parallel_size=None):
        super().__init__()
        self.module = module
        self.parallel_cfg = parallel_cfg
        self.overlap_grad_reduce = overlap_grad_reduce
        self.use_distributed_optimizer = use_distributed_optimizer
        self.dp_group = data_parallel_group if data_parallel_group is not None else state.get_data_parallel_group()
        self.dp_size = data_parallel_size or state.get_data_parallel_world_size()
        self._sync_enabled = True
        params = [p for p in module.parameters() if p.requires_grad]
        dtypes = {p.dtype for p in params}
        if use_distributed_optimizer and len(dtypes) > 1:
            raise ValueError(f"distributed optimizer needs one parameter dtype per model chunk, found {dtypes}")
        self._build_buckets(params, int(bucket_size_mb * 2 ** 20 / 4))
        for p in params:
            p.register_post_accumulate_grad_hook(self._make_hook())

    def _build_buckets(self, params, bucket_numel):
        # Reverse order: backward produces the last layers' gradients first.
        ordered = [p for p in reversed(params) if not needs_cross_rank_sum(p)]
        deferred = [p for p in reversed(params) if needs_cross_rank_sum(p)]
        groups, current = [], []
        for p in ordered:
            current.append(p)
            if sum(q.numel() for q in current) >= bucket_numel:
                groups.append((current, False))
                current = []
        if current:
            groups.append((current, False))
        if deferred:
            groups.append((deferred, True))
        self.buckets, offset, layout = [], 0, []
        for i, (group_params, is_deferred) in enumerate(groups):
            start = offset
            for p in group_params:
                layout.append((p, offset))
                offset += p.numel()
            offset = start + _round_up(offset - start, self.dp_size)  # equal shards per DP rank
            self.buckets.append(Bucket(i, group_params, start, offset, is_deferred))
        self.grad_buffer = torch.zeros(offset, dtype=torch.float32, device=params[0].device if params else None)
        self.param_buffer = None
        if self.use_distributed_optimizer and params:
            self.param_buffer = torch.zeros(offset, dtype=params[0].dtype, device=params[0].device)
        self._bucket_of = {}
        for bucket in self.buckets:
            for p in bucket.params:
                self._bucket_of[p] = bucket
        self._offset_of = {}
        for p, off in layout:
            self._offset_of[p] = off
            p.main_grad = self.grad_buffer[off:off + p.numel()].view(p.shape)
            if self.param_buffer is not None:
                view = self.param_buffer[off:off + p.numel()].view(p.shape)
                view.copy_(p.data)
                p.data = view  # parameters live in the buffer the optimizer all-gathers into
        self._reset_buckets()

    def param_offset(self, param):
        """Offset of `param` in this chunk's gradient (and parameter) buffer."""
        return self._offset_of[param]

    def _reset_buckets(self):
        for b in self.buckets:
            b.pending = set(b.params)
            b.work = None

    def _make_hook(self):
        def hook(param):
            bucket = self._bucket_of[param]
            if bucket.launched:
                raise RuntimeError(
                    f"a gradient for a parameter of shape {tuple(param.shape)} arrived after its bucket's "
                    "data-parallel reduction started (parameter used twice across backward calls with sync on?)")
            param.main_grad.add_(param.grad)
            param.grad = None
            if self._sync_enabled and self.overlap_grad_reduce and not bucket.deferred:
                bucket.pending.discard(param)
                if not bucket.pending:
                    self._launch(bucket)
        return hook

    def _launch(self, bucket):
        grad = self.grad_buffer[bucket.start:bucket.end]
        if self.dp_size == 1:
            bucket.work = _Done()
            return
        grad.div_(self.dp_size)
        if self.use_distributed_optimizer:
            bucket.shard_out = torch.empty(grad.numel() // self.dp_size, dtype=grad.dtype, device=grad.device)
            bucket.work = _reduce_scatter(bucket.shard_out, grad, self.dp_group, async_op=True)
        else:
            bucket.work = dist.all_reduce(grad, group=self.dp_group, async_op=True)

    def shard_range(self, bucket):
        """[start, end) of this DP rank's shard of `bucket` in the buffers (distributed optimizer)."""
        size = (bucket.end - bucket.start) // self.dp_size
        start = bucket.start + state.get_data_parallel_rank() * size if self.dp_size > 1 else bucket.start
        return start, start + size

    def finish_grad_sync(self):
        """Launch the buckets not yet launched, wait for all; gradients are then DP-averaged."""
        for bucket in self.buckets:
            if not bucket.launched:
                self._launch(bucket)
        for bucket in self.buckets:
            bucket.work.wait()
            if bucket.shard_out is not None:
                start, end = self.shard_range(bucket)
                self.grad_buffer[start:end].copy_(bucket.shard_out)
                bucket.shard_out = None
        self._reset_buckets()

    def set_grad_sync(self, enabled):
        """Whether the coming backward launches bucket reductions as buckets fill (last micro-batch only)."""
        self._sync_enabled = enabled

    @contextmanager
    def no_sync(self):
        """Accumulate gradients without launching reductions (all but the last micro-batch)."""
        before = self._sync_enabled
        self._sync_enabled = False
        try:
            yield
        finally:
            self._sync_enabled = before

    def zero_grad_buffer(self):
        self.grad_buffer.zero_()
        for p in self.module.parameters():
            p.grad = None
        self._reset_buckets()

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    # Checkpoints hold the wrapped module's names, whatever the wrapping.
    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return self.module.load_state_dict(state_dict, strict=strict)


class _Done:
    """Stands in for a finished async work handle (DP size 1)."""

    def wait(self):
        return True


def _round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def allreduce_tied_embedding_grads(model_chunks):
    """Sum the gradients that span other groups before the DP reduction.

    Tied input/output embeddings live on the first and the last pipeline stage (summed over the
    embedding group); sequence-parallel replicated parameters saw only this rank's tokens (summed over TP).
    """
    ranks = state.get_embedding_ranks()
    if len(ranks) > 1 and state.get_rank() in ranks:
        grads = [_grad_of(p) for chunk in model_chunks for p in chunk.parameters()
                 if getattr(p, "shared_embedding", False)]
        grads = [g for g in grads if g is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=state.get_embedding_group())
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
    from megasnow.parallel.tensor_parallel import allreduce_sequence_parallel_grads

    allreduce_sequence_parallel_grads([_unwrap(c) for c in model_chunks])


def _grad_of(p):
    g = getattr(p, "main_grad", None)
    return g if g is not None else p.grad


def _unwrap(chunk):
    return getattr(chunk, "module", chunk)
