"""Tensor and sequence parallelism: autograd mappings, parallel layers, vocab-parallel cross entropy, RNG tracker."""
from megasnow.parallel.tensor_parallel.cross_entropy import vocab_parallel_cross_entropy
from megasnow.parallel.tensor_parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    column_parallel_linear,
    copy_full_into_,
    shard_full_tensor,
    unshard_tensors,
)
from megasnow.parallel.tensor_parallel.mappings import (
    copy_to_tensor_parallel_region,
    gather_from_sequence_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    scatter_to_sequence_parallel_region,
    scatter_to_tensor_parallel_region,
)
from megasnow.parallel.tensor_parallel.random import get_rng_tracker, model_parallel_seed
from megasnow.parallel.tensor_parallel.sequence_parallel import (
    allreduce_sequence_parallel_grads,
    sequence_parallel_params,
)

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "VocabParallelEmbedding", "column_parallel_linear",
    "copy_full_into_", "shard_full_tensor", "unshard_tensors", "vocab_parallel_cross_entropy",
    "copy_to_tensor_parallel_region", "reduce_from_tensor_parallel_region", "scatter_to_tensor_parallel_region",
    "gather_from_tensor_parallel_region", "scatter_to_sequence_parallel_region",
    "gather_from_sequence_parallel_region", "reduce_scatter_to_sequence_parallel_region",
    "get_rng_tracker", "model_parallel_seed", "allreduce_sequence_parallel_grads", "sequence_parallel_params",
]
