"""Turn a model config and a parallel layout into this rank's model chunks.

`ParallelConfig` is the `parallel:` section of a training config, checked at start-up against the model
and the world size; `build_model` builds one LlamaModel slice per virtual pipeline stage (embedding on
the first, head and loss on the last), initialises it from the seed exactly like the unsharded model,
ties the embedding across the first and last stage, and wraps it for data-parallel gradient reduction.
"""
from dataclasses import dataclass, field

import torch

from megasnow.parallel import state
from megasnow.parallel.state import ParallelConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class ParallelConfig:
    tensor: int = field(default=1, metadata={"help": "tensor-parallel size (adjacent ranks)"})
    pipeline: int = field(default=1, metadata={"help": "pipeline stages"})
    virtual_pipeline: int | None = field(default=None, metadata={"help": "model chunks per stage (interleaved 1F1B)"})
    sequence_parallel: bool = field(default=False, metadata={"help": "split norms/dropout regions along sequence"})
    use_distributed_optimizer: bool = field(default=False, metadata={"help": "ZeRO-1: shard optimizer over DP"})
    overlap_grad_reduce: bool = field(default=True, metadata={"help": "launch DP bucket reductions in backward"})
    bucket_size_mb: float = field(default=25.0, metadata={"help": "fp32 gradient bucket size"})
    micro_batch_size: int = field(default=1, metadata={"help": "sequences per micro-batch per DP rank"})
    pipeline_layers: list[int] | None = field(
        default=None, metadata={"help": "explicit layers per (virtual) stage, model order; default: equal split"})
    params_dtype: str = field(default="fp32", metadata={"help": "model weights: fp32 | bf16 (fp32 masters)"})

    def __post_init__(self):
        if self.params_dtype not in DTYPES:
            raise ParallelConfigError(f"parallel.params_dtype must be one of {list(DTYPES)}, got {self.params_dtype!r}")
        for key in ("tensor", "pipeline", "micro_batch_size"):
            if getattr(self, key) < 1:
                raise ParallelConfigError(f"parallel.{key} must be at least 1, got {getattr(self, key)}")
        if not self.bucket_size_mb > 0:
            raise ParallelConfigError(f"parallel.bucket_size_mb must be positive, got {self.bucket_size_mb}")

    @property
    def num_model_chunks(self):
        return self.virtual_pipeline or 1

    def data_parallel_size(self, world_size):
        return state.check_parallel_sizes(world_size, self.tensor, self.pipeline)

    def validate(self, model_cfg, world_size):
        """Refuse layouts that cannot work, saying what to change. Returns the data-parallel size."""
        dp = self.data_parallel_size(world_size)
        v = self.virtual_pipeline
        if v is not None and v < 1:
            raise ParallelConfigError(f"parallel.virtual_pipeline must be at least 1 or null, got {v}")
        if v is not None and v > 1 and self.pipeline < 2:
            raise ParallelConfigError("parallel.virtual_pipeline > 1 needs parallel.pipeline >= 2; "
                                      "set virtual_pipeline=null or raise pipeline")
        stages = self.pipeline * self.num_model_chunks
        layers = model_cfg.num_layers
        split = f"pipeline {self.pipeline} x virtual {self.num_model_chunks}"
        if stages > layers:
            raise ParallelConfigError(
                f"{stages} pipeline stages ({split}) exceed model.num_layers ({layers}); lower parallel.pipeline / "
                f"parallel.virtual_pipeline")
        if self.pipeline_layers is not None:
            counts = self.pipeline_layers
            if len(counts) != stages or any(n < 1 for n in counts) or sum(counts) != layers:
                per = "virtual stage" if self.num_model_chunks > 1 else "pipeline stage"
                raise ParallelConfigError(
                    f"parallel.pipeline_layers {counts} must list {stages} layer counts >= 1, one per {per} "
                    f"({split}) in model order, adding up to model.num_layers ({layers}); it lists {len(counts)} "
                    f"adding up to {sum(counts)}")
        elif layers % stages:
            raise ParallelConfigError(
                f"model.num_layers ({layers}) is not divisible by the {stages} pipeline stages ({split}); change "
                f"the sizes or give parallel.pipeline_layers (layers per stage) for an uneven split")
        if self.sequence_parallel and self.tensor < 2:
            raise ParallelConfigError("parallel.sequence_parallel needs parallel.tensor >= 2; set it to false")
        model_cfg.validate_parallel(self.tensor, self.sequence_parallel)
        return dp

    def layer_ids_per_stage(self, num_layers):
        """Global layer ids of every model part, in model order (part c runs on stage c % pipeline)."""
        stages = self.pipeline * self.num_model_chunks
        counts = self.pipeline_layers or [num_layers // stages] * stages
        out, start = [], 0
        for n in counts:
            out.append(list(range(start, start + n)))
            start += n
        return out


def build_model(model_cfg, parallel_cfg, seed, model_factory=None):
    """This rank's model chunks (one per virtual stage), initialised from `seed`, wrapped for DP.

    Initialises the process groups if needed. `model_factory(cfg, pre_process, post_process, layer_ids)`
    defaults to LlamaModel. Every chunk is wrapped in `DistributedDataParallel` (with DP size 1 it only
    adds the fp32 gradient buffers the optimizers read), whose state_dict has the plain model's names.
    """
    from megasnow.parallel.data_parallel.ddp import DistributedDataParallel

    world = state.get_world_size()
    parallel_cfg.validate(model_cfg, world)
    _ensure_groups(parallel_cfg)
    if model_factory is None:
        from megasnow.model.llama import LlamaModel as model_factory
    model_cfg = model_cfg.replace(sequence_parallel=parallel_cfg.sequence_parallel)
    pp, pp_rank = parallel_cfg.pipeline, state.get_pipeline_parallel_rank()
    parts = parallel_cfg.layer_ids_per_stage(model_cfg.num_layers)
    dtype = DTYPES[parallel_cfg.params_dtype]
    device = _model_device()
    chunks = []
    for v in range(parallel_cfg.num_model_chunks):
        part = v * pp + pp_rank
        pre, post = part == 0, part == len(parts) - 1
        state.set_virtual_pipeline_parallel_rank(v if parallel_cfg.virtual_pipeline else None)
        model = model_factory(model_cfg, pre_process=pre, post_process=post, layer_ids=parts[part])
        model.init_weights(seed)
        model.to(device=device, dtype=dtype)
        chunks.append(model)
    state.set_virtual_pipeline_parallel_rank(None)
    tie_embeddings_across_stages(chunks, model_cfg)
    if torch.distributed.is_initialized():
        # Set up the world communicator now: with NCCL, a first batched p2p call would need every rank in it.
        torch.distributed.barrier()
    return [DistributedDataParallel(m, parallel_cfg, parallel_cfg.bucket_size_mb, parallel_cfg.overlap_grad_reduce,
                                    parallel_cfg.use_distributed_optimizer) for m in chunks]


def _model_device():
    """The current GPU under NCCL or in a single GPU process; the CPU under gloo or without a GPU."""
    dist = torch.distributed
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if dist.is_initialized() and dist.get_backend() != "nccl":
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _ensure_groups(cfg):
    if not state.model_parallel_is_initialized():
        state.initialize_model_parallel(cfg.tensor, cfg.pipeline, cfg.virtual_pipeline)
        return
    have = (state.get_tensor_parallel_world_size(), state.get_pipeline_parallel_world_size(),
            state.get_virtual_pipeline_parallel_world_size())
    if have != (cfg.tensor, cfg.pipeline, cfg.virtual_pipeline):
        raise ParallelConfigError(f"process groups were set up for (tensor, pipeline, virtual) = {have}, "
                                  f"but the parallel config asks for {(cfg.tensor, cfg.pipeline, cfg.virtual_pipeline)}")


@torch.no_grad()
def tie_embeddings_across_stages(chunks, model_cfg):
    """With tied embeddings split over stages, mark both copies and make the last stage's equal the first's."""
    if not model_cfg.tie_embeddings or state.get_pipeline_parallel_world_size() == 1:
        return
    first = state.is_pipeline_first_stage(ignore_virtual=True)
    last = state.is_pipeline_last_stage(ignore_virtual=True)
    weight = None
    if first:
        weight = chunks[0].embed.weight
    elif last:
        weight = output_embedding_weight(chunks[-1])
    if weight is None:  # a middle stage
        return
    weight.shared_embedding = True
    weight.shared_embedding_replica = not first  # counted once in the gradient norm
    torch.distributed.broadcast(weight.data, src=state.get_embedding_ranks()[0], group=state.get_embedding_group())


def output_embedding_weight(model):
    """The weight a last-stage chunk multiplies by to get logits (its copy of the tied embedding)."""
    if hasattr(model, "head_weight"):
        return model.head_weight()
    head = getattr(model, "lm_head", None)
    if head is not None and getattr(head, "weight", None) is not None:
        return head.weight
    return model.embed.weight
