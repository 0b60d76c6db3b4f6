"""Autograd-aware communication into and out of the tensor-parallel region (Megatron's mappings).

Tensor-parallel ops split the last (hidden) dimension; sequence-parallel ops split the sequence
dimension, which is dim 1 of megasnow's [batch, seq, hidden] activations. With one TP rank every
function is the identity. Gathers and reduce-scatters go through one flat buffer (concatenated along
dim 0) on every backend, gloo included, so the code tested on CPU is the code that runs on NCCL.
"""
import torch
import torch.distributed as dist

from megasnow.parallel import state

SEQUENCE_DIM = 1
# torch >= 2.10 names (the *_tensor spellings are deprecated aliases); both NCCL and gloo implement them.
_ALL_GATHER_INTO = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER_INTO = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _world():
    return state.get_tensor_parallel_world_size()


def _group():
    return state.get_tensor_parallel_group()


def _all_reduce(x):
    """Sum over TP ranks into a fresh tensor (never in place on the caller's tensor)."""
    if _world() == 1:
        return x
    x = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(x, group=_group())
    return x


def _split(x, dim):
    """This rank's chunk of x along dim (contiguous copy)."""
    world = _world()
    if world == 1:
        return x
    size = x.shape[dim]
    if size % world:
        raise ValueError(f"tensor-parallel split: dimension {dim} of size {size} is not divisible by TP size {world}")
    return x.chunk(world, dim=dim)[state.get_tensor_parallel_rank()].contiguous()


def _all_gather(x, dim):
    """Concatenate every rank's x along dim."""
    world = _world()
    if world == 1:
        return x
    x = x.contiguous()
    gathered = torch.empty((world * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    _ALL_GATHER_INTO(gathered, x, group=_group())
    if dim == 0:
        return gathered
    return torch.cat(gathered.chunk(world, dim=0), dim=dim)


def _reduce_scatter(x, dim):
    """Sum x over ranks and keep this rank's chunk along dim."""
    world = _world()
    if world == 1:
        return x
    if x.shape[dim] % world:
        raise ValueError(f"reduce-scatter: dimension {dim} of size {x.shape[dim]} is not divisible by TP size {world}")
    chunks = x.chunk(world, dim=dim)
    stacked = torch.cat(chunks, dim=0) if dim != 0 else x.contiguous()  # rank r's chunk is the r-th block of rows
    out = torch.empty_like(chunks[0], memory_format=torch.contiguous_format)
    _REDUCE_SCATTER_INTO(out, stacked, group=_group())
    return out


class _CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad)


class _ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ScatterToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _split(x, -1)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, -1)


class _GatherFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_gather(x, -1)

    @staticmethod
    def backward(ctx, grad):
        return _split(grad, -1)


class _ScatterToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _split(x, SEQUENCE_DIM)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, SEQUENCE_DIM)


class _GatherFromSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tensor_parallel_output_grad):
        ctx.tensor_parallel_output_grad = tensor_parallel_output_grad
        return _all_gather(x, SEQUENCE_DIM)

    @staticmethod
    def backward(ctx, grad):
        # Consumers inside the TP region produce partial gradients (sum them); replicated consumers do not.
        if ctx.tensor_parallel_output_grad:
            return _reduce_scatter(grad, SEQUENCE_DIM), None
        return _split(grad, SEQUENCE_DIM), None


class _ReduceScatterToSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _reduce_scatter(x, SEQUENCE_DIM)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, SEQUENCE_DIM)


def copy_to_tensor_parallel_region(x):
    """Forward identity; backward all-reduce (the input of a column-parallel layer)."""
    return _CopyToTP.apply(x) if _world() > 1 else x


def reduce_from_tensor_parallel_region(x):
    """Forward all-reduce; backward identity (the output of a row-parallel layer)."""
    return _ReduceFromTP.apply(x) if _world() > 1 else x


def scatter_to_tensor_parallel_region(x):
    """Forward: keep this rank's slice of the last dim; backward all-gather."""
    return _ScatterToTP.apply(x) if _world() > 1 else x


def gather_from_tensor_parallel_region(x):
    """Forward: all-gather along the last dim; backward keep this rank's slice."""
    return _GatherFromTP.apply(x) if _world() > 1 else x


def scatter_to_sequence_parallel_region(x):
    """Forward: keep this rank's chunk of the sequence; backward all-gather the sequence."""
    return _ScatterToSequence.apply(x) if _world() > 1 else x


def gather_from_sequence_parallel_region(x, tensor_parallel_output_grad=True):
    """Forward: all-gather the sequence; backward reduce-scatter (or split when the consumer is replicated)."""
    return _GatherFromSequence.apply(x, tensor_parallel_output_grad) if _world() > 1 else x


def reduce_scatter_to_sequence_parallel_region(x):
    """Forward: sum over TP ranks and keep this rank's sequence chunk; backward all-gather the sequence."""
    return _ReduceScatterToSequence.apply(x) if _world() > 1 else x
