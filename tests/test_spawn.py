"""The multi-process harness: results come back by rank, a failing rank fails fast with its traceback."""

import pytest
import torch
import torch.distributed as dist

from megasnow.parallel.spawn import SpawnError, run_processes


def _allreduce(rank, world):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return t.item()


def _one_rank_raises(rank, world):
    if rank == 1:
        raise ValueError("boom from rank 1")
    t = torch.zeros(1)
    dist.all_reduce(t)  # would wait forever for rank 1 without the harness
    return rank


def test_results_by_rank():
    assert run_processes(_allreduce, 2) == [3.0, 3.0]


def test_failing_rank_is_reported_quickly():
    # Rank 0 waits in its all_reduce far longer than the run's deadline: the error can only be rank 1's if the
    # harness reports it without waiting for the other ranks (a harness that waited would hit the deadline and
    # say so instead). No wall-clock bound: starting two ranks takes ~30 s on a loaded 2-core machine.
    with pytest.raises(SpawnError, match="boom from rank 1"):
        run_processes(_one_rank_raises, 2, timeout_s=150, collective_timeout_s=3600)
