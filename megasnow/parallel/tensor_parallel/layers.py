"""Column-, row- and vocabulary-parallel layers; with one TP rank they compute exactly a plain linear / embedding.

Every sharded parameter records how it was cut (`tensor_parallel_dim`, `tensor_parallel_partitions`,
`full_shape`), so a full (unsharded) tensor can be sliced into this rank's shard with `shard_full_tensor`
and shards can be joined back with `unshard_tensors` (initialization, checkpoint conversion).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from megasnow.parallel import state
from megasnow.parallel.tensor_parallel import mappings


def _tp():
    return state.get_tensor_parallel_world_size(), state.get_tensor_parallel_rank()


def _divide(n, d, what):
    if n % d:
        raise ValueError(f"{what} ({n}) is not divisible by the tensor-parallel size {d}")
    return n // d


def mark_sharded(param, dim, partitions, full_shape):
    """Record that `param` is this rank's slice along `dim` of a full tensor made of `partitions` segments."""
    param.tensor_parallel_dim = dim
    param.tensor_parallel_partitions = tuple(partitions)
    param.full_shape = tuple(full_shape)


def mark_sequence_parallel(param):
    """A replicated parameter applied to sequence shards: its gradient must be summed over TP ranks."""
    param.sequence_parallel = True


def shard_full_tensor(full, dim, partitions, rank, world):
    """This rank's shard: the rank-th 1/world slice of each segment along `dim`, concatenated.

    partitions=(q, k, v) on a fused QKV weight gives each rank its own q, k and v heads.
    """
    if dim is None:
        return full
    pieces, offset = [], 0
    for size in partitions:
        per_rank = _divide(size, world, f"segment of size {size}")
        pieces.append(full.narrow(dim, offset + rank * per_rank, per_rank))
        offset += size
    if offset != full.shape[dim]:
        raise ValueError(f"partitions {partitions} do not add up to dimension {dim} of size {full.shape[dim]}")
    return torch.cat(pieces, dim=dim) if len(pieces) > 1 else pieces[0]


def unshard_tensors(shards, dim, partitions):
    """Inverse of shard_full_tensor: join the per-rank shards (rank order) into the full tensor."""
    if dim is None:
        return shards[0]
    world = len(shards)
    segments = []
    per_rank_sizes = [size // world for size in partitions]
    for i in range(len(partitions)):
        start = sum(per_rank_sizes[:i])
        segments += [s.narrow(dim, start, per_rank_sizes[i]) for s in shards]
    return torch.cat(segments, dim=dim)


@torch.no_grad()
def copy_full_into_(param, full):
    """Fill `param` with its shard of the full tensor (for init and loading unsharded weights)."""
    world, rank = _tp()
    dim = getattr(param, "tensor_parallel_dim", None)
    shard = shard_full_tensor(full, dim, getattr(param, "tensor_parallel_partitions", (None,)), rank, world) \
        if dim is not None else full
    if tuple(shard.shape) != tuple(param.shape):
        raise ValueError(f"shard of shape {tuple(shard.shape)} does not fit parameter of shape {tuple(param.shape)}")
    param.copy_(shard)


def column_parallel_linear(x, weight, bias=None, sequence_parallel=False, gather_output=False):
    """y = x @ weight.T with weight split by output rows: input copied (or sequence-gathered) into the TP region."""
    if sequence_parallel:
        x = mappings.gather_from_sequence_parallel_region(x, tensor_parallel_output_grad=True)
    else:
        x = mappings.copy_to_tensor_parallel_region(x)
    y = F.linear(x, weight, bias)
    return mappings.gather_from_tensor_parallel_region(y) if gather_output else y


class ColumnParallelLinear(nn.Module):
    """Linear layer whose output features are split across TP ranks (Y = X A, A = [A_1 ... A_p]).

    `partitions` splits a fused output (e.g. QKV, gate+up) segment by segment so each rank holds its own part of
    every segment. With `sequence_parallel` the input arrives as sequence shards and is all-gathered.
    """

    def __init__(self, in_features, out_features, bias=False, gather_output=False, sequence_parallel=False,
                 partitions=None, device=None, dtype=None):
        super().__init__()
        world, _ = _tp()
        partitions = tuple(partitions) if partitions else (out_features,)
        if sum(partitions) != out_features:
            raise ValueError(f"partitions {partitions} must add up to out_features {out_features}")
        for size in partitions:
            _divide(size, world, "ColumnParallelLinear output segment")
        if gather_output and len(partitions) > 1 and world > 1:
            raise ValueError("gather_output would interleave the fused segments across ranks; "
                             "use gather_output=False with partitions")
        self.in_features, self.out_features = in_features, out_features
        self.gather_output, self.sequence_parallel = gather_output, sequence_parallel
        self.output_size_per_partition = out_features // world
        self.weight = nn.Parameter(torch.empty(self.output_size_per_partition, in_features, device=device, dtype=dtype))
        mark_sharded(self.weight, 0, partitions, (out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.output_size_per_partition, device=device, dtype=dtype))
            mark_sharded(self.bias, 0, partitions, (out_features,))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return column_parallel_linear(x, self.weight, self.bias, self.sequence_parallel, self.gather_output)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features} (local {self.output_size_per_partition}), " \
               f"sequence_parallel={self.sequence_parallel}"


class RowParallelLinear(nn.Module):
    """Linear layer whose input features are split across TP ranks (A = [A_1; ...; A_p]); outputs are summed.

    With `sequence_parallel` the sum is a reduce-scatter that leaves each rank its sequence shard.
    """

    def __init__(self, in_features, out_features, bias=False, input_is_parallel=True, sequence_parallel=False,
                 device=None, dtype=None):
        super().__init__()
        world, _ = _tp()
        if sequence_parallel and not input_is_parallel:
            raise ValueError("RowParallelLinear with sequence_parallel needs input_is_parallel=True")
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel, self.sequence_parallel = input_is_parallel, sequence_parallel
        self.input_size_per_partition = _divide(in_features, world, "RowParallelLinear in_features")
        self.weight = nn.Parameter(torch.empty(out_features, self.input_size_per_partition, device=device, dtype=dtype))
        mark_sharded(self.weight, 1, (in_features,), (out_features, in_features))
        if bias:
            # Added after the reduction, so replicated; under SP it sees only local tokens.
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
            if sequence_parallel:
                mark_sequence_parallel(self.bias)
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        if not self.input_is_parallel:
            x = mappings.scatter_to_tensor_parallel_region(x)
        y = F.linear(x, self.weight)
        if self.sequence_parallel:
            y = mappings.reduce_scatter_to_sequence_parallel_region(y)
        else:
            y = mappings.reduce_from_tensor_parallel_region(y)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self):
        return f"in={self.in_features} (local {self.input_size_per_partition}), out={self.out_features}, " \
               f"sequence_parallel={self.sequence_parallel}"


class VocabParallelEmbedding(nn.Module):
    """Embedding whose rows (vocabulary) are split across TP ranks; each rank looks up its own range.

    Rows outside this rank's range give zeros and the partial results are summed over TP (reduce-scattered
    along the sequence when `sequence_parallel`).
    """

    def __init__(self, num_embeddings, embedding_dim, sequence_parallel=False, device=None, dtype=None):
        super().__init__()
        world, rank = _tp()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.sequence_parallel = sequence_parallel
        self.num_embeddings_per_partition = _divide(num_embeddings, world, "padded vocabulary")
        self.vocab_start_index = rank * self.num_embeddings_per_partition
        self.vocab_end_index = self.vocab_start_index + self.num_embeddings_per_partition
        self.weight = nn.Parameter(torch.empty(self.num_embeddings_per_partition, embedding_dim,
                                               device=device, dtype=dtype))
        mark_sharded(self.weight, 0, (num_embeddings,), (num_embeddings, embedding_dim))

    def forward(self, ids):
        world, _ = _tp()
        if world == 1:
            out = F.embedding(ids, self.weight)
        else:
            outside = (ids < self.vocab_start_index) | (ids >= self.vocab_end_index)
            local = (ids - self.vocab_start_index).masked_fill(outside, 0)
            out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        if self.sequence_parallel:
            return mappings.reduce_scatter_to_sequence_parallel_region(out)
        return mappings.reduce_from_tensor_parallel_region(out)

    def extra_repr(self):
        return f"{self.num_embeddings} (local {self.num_embeddings_per_partition}), {self.embedding_dim}, " \
               f"sequence_parallel={self.sequence_parallel}"

