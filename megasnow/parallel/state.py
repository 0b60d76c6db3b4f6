"""Process groups for tensor x pipeline x data parallelism, laid out as in Megatron.

Ranks are ordered tensor-fastest: with world 8, tp=2, pp=2, dp=2 the tensor groups are
[0,1] [2,3] [4,5] [6,7], the data groups [0,2] [1,3] [4,6] [5,7] and the pipeline groups
[0,4] [1,5] [2,6] [3,7]. With one process and no torch.distributed every size is 1.
"""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megasnow.errors import UserError


class ParallelConfigError(UserError, ValueError):
    """Sizes that cannot be laid out; the message says what to change."""


@dataclass
class _Groups:
    tp: int
    pp: int
    dp: int
    vpp: int | None
    tp_group: object
    pp_group: object
    dp_group: object
    mp_group: object  # tensor x pipeline: everything that holds one model replica
    embedding_group: object  # first and last pipeline stage, for tied embeddings
    tp_ranks: list
    pp_ranks: list
    dp_ranks: list
    embedding_ranks: list


_GROUPS: _Groups | None = None
_VIRTUAL_PP_RANK: int | None = None


def check_parallel_sizes(world_size, tp=1, pp=1, dp=None):
    """Return dp; refuse sizes whose product is not the world size."""
    if tp < 1 or pp < 1:
        key = "parallel.tensor" if tp < 1 else "parallel.pipeline"
        raise ParallelConfigError(f"{key} must be at least 1 (parallel.tensor {tp}, parallel.pipeline {pp})")
    if dp is None:
        if world_size % (tp * pp):
            raise ParallelConfigError(
                f"world size {world_size} is not divisible by tensor x pipeline = {tp} x {pp}; "
                f"launch a multiple of {tp * pp} processes or change parallel.tensor / parallel.pipeline"
            )
        dp = world_size // (tp * pp)
    if tp * pp * dp != world_size:
        raise ParallelConfigError(
            f"tensor x pipeline x data = {tp} x {pp} x {dp} = {tp * pp * dp} does not equal the world size "
            f"{world_size}; change the sizes or the number of launched processes"
        )
    return dp


def init_distributed(backend=None, timeout_s=600):
    """Initialise the default process group from torchrun's environment (no-op when already up or single process)."""
    if dist.is_available() and dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1 and "MASTER_ADDR" not in os.environ:
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def initialize_model_parallel(tensor_size=1, pipeline_size=1, virtual_pipeline_size=None, timeout_s=None):
    """Build the tensor, pipeline, data, model and embedding groups over the default group."""
    global _GROUPS
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    tp, pp = tensor_size, pipeline_size
    dp = check_parallel_sizes(world, tp, pp)
    if virtual_pipeline_size is not None and virtual_pipeline_size > 1 and pp < 2:
        raise ParallelConfigError(f"parallel.virtual_pipeline={virtual_pipeline_size} needs parallel.pipeline >= 2; "
                                  f"set parallel.virtual_pipeline=null or raise parallel.pipeline")
    kw = {}
    if timeout_s is not None:
        kw["timeout"] = datetime.timedelta(seconds=timeout_s)

    def new_group(ranks):
        if not dist.is_initialized():
            return None
        return dist.new_group(ranks, **kw)

    # Every rank must call new_group for every group, in the same order.
    tp_group = pp_group = dp_group = mp_group = emb_group = None
    tp_ranks = pp_ranks = dp_ranks = emb_ranks = [rank]
    for start in range(0, world, tp):
        ranks = list(range(start, start + tp))
        g = new_group(ranks)
        if rank in ranks:
            tp_group, tp_ranks = g, ranks
    block = tp * dp  # ranks of one pipeline stage
    for stage_start in range(0, world, block):
        for t in range(tp):
            ranks = list(range(stage_start + t, stage_start + block, tp))
            g = new_group(ranks)
            if rank in ranks:
                dp_group, dp_ranks = g, ranks
    for i in range(block):
        ranks = list(range(i, world, block))
        g = new_group(ranks)
        if rank in ranks:
            pp_group, pp_ranks = g, ranks
        emb = [ranks[0], ranks[-1]] if len(ranks) > 1 else ranks
        g = new_group(emb)
        if rank in emb:
            emb_group, emb_ranks = g, emb
    for d in range(dp):
        ranks = [r for r in range(world) if (r // tp) % dp == d]
        g = new_group(ranks)
        if rank in ranks:
            mp_group = g
    _GROUPS = _Groups(tp, pp, dp, virtual_pipeline_size, tp_group, pp_group, dp_group, mp_group, emb_group,
                      tp_ranks, pp_ranks, dp_ranks, emb_ranks)


def model_parallel_is_initialized():
    return _GROUPS is not None


def destroy_model_parallel():
    """Forget the groups; the default process group stays (see `shutdown`)."""
    global _GROUPS, _VIRTUAL_PP_RANK
    _GROUPS = None
    _VIRTUAL_PP_RANK = None


def shutdown():
    destroy_model_parallel()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _g():
    if _GROUPS is None:
        initialize_model_parallel()
    return _GROUPS


def _rank_in(group_ranks):
    return group_ranks.index(dist.get_rank()) if dist.is_initialized() else 0


# Tensor parallel
def get_tensor_parallel_group():
    return _g().tp_group


def get_tensor_parallel_world_size():
    return _g().tp


def get_tensor_parallel_rank():
    return _rank_in(_g().tp_ranks)


# Pipeline parallel
def get_pipeline_parallel_group():
    return _g().pp_group


def get_pipeline_parallel_world_size():
    return _g().pp


def get_pipeline_parallel_rank():
    return _rank_in(_g().pp_ranks)


def get_pipeline_parallel_ranks():
    """Global ranks of this rank's pipeline, stage 0 first (for point-to-point sends)."""
    return list(_g().pp_ranks)


def get_virtual_pipeline_parallel_world_size():
    return _g().vpp


def get_virtual_pipeline_parallel_rank():
    return _VIRTUAL_PP_RANK


def set_virtual_pipeline_parallel_rank(rank):
    global _VIRTUAL_PP_RANK
    _VIRTUAL_PP_RANK = rank


def is_pipeline_first_stage(ignore_virtual=False):
    if not ignore_virtual and _g().vpp and _VIRTUAL_PP_RANK not in (None, 0):
        return False
    return get_pipeline_parallel_rank() == 0


def is_pipeline_last_stage(ignore_virtual=False):
    if not ignore_virtual and _g().vpp and _VIRTUAL_PP_RANK not in (None, _g().vpp - 1):
        return False
    return get_pipeline_parallel_rank() == _g().pp - 1


def get_embedding_group():
    """First and last pipeline stage of this pipeline: tied embedding gradients are summed here."""
    return _g().embedding_group


def get_embedding_ranks():
    return list(_g().embedding_ranks)


# Data parallel
def get_data_parallel_group():
    return _g().dp_group


def get_data_parallel_world_size():
    return _g().dp


def get_data_parallel_rank():
    return _rank_in(_g().dp_ranks)


def get_data_parallel_ranks():
    return list(_g().dp_ranks)


def get_model_parallel_group():
    """Tensor x pipeline ranks of one replica (for the global gradient norm)."""
    return _g().mp_group


def get_world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank():
    return dist.get_rank() if dist.is_initialized() else 0
