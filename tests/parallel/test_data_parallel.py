"""Data parallelism on 2 gloo ranks: bucketed gradient averaging overlapped with backward, no_sync, NaN skip.

Uses the stand-in model; the Llama DP layouts are in test_parallel_equivalence.py.
"""
import math

import pytest
import torch

from megasnow.parallel import state
from tests.parallel.test_parallel_equivalence_support import (
    StandInConfig,
    make_microbatches,
    stand_in_factory,
    two_rank_results,
)

SEED = 11


def _build(overlap=True, bucket_size_mb=0.002):
    from megasnow.parallel.parallelize import ParallelConfig, build_model

    pcfg = ParallelConfig(overlap_grad_reduce=overlap, bucket_size_mb=bucket_size_mb)
    return build_model(StandInConfig(), pcfg, SEED, model_factory=stand_in_factory)[0]


def _reference_grads(microbatches_per_rank):
    """Gradient of the mean over every rank's micro-batches, computed by plain autograd on one model."""
    ref = stand_in_factory(StandInConfig())
    ref.init_weights(SEED)
    n = sum(len(m) for m in microbatches_per_rank)
    for mbs in microbatches_per_rank:
        for mb in mbs:
            (ref(mb["tokens"], labels=mb["labels"]) / n).backward()
    return {name: p.grad for name, p in ref.named_parameters()}


def _max_grad_diff(ddp, ref_grads):
    return max(float((p.main_grad - ref_grads[n]).abs().max()) for n, p in ddp.module.named_parameters())


def _overlap_and_average(rank, world, overlap):
    """One backward with sync on: which buckets were launched while backward still ran, and the result."""
    state.initialize_model_parallel()
    ddp = _build(overlap=overlap)
    data = [make_microbatches(1, 2, 8, 64, seed=50 + r) for r in range(world)]
    seen_at_embedding = []
    # The embedding output's gradient is among the last things backward computes.
    def watch_embedding_grad(module, inputs, output):
        output.register_hook(lambda g: seen_at_embedding.append([b.launched for b in ddp.buckets]))

    ddp.module.embed.register_forward_hook(watch_embedding_grad)
    ddp.set_grad_sync(True)
    mb = data[rank][0]
    ddp(mb["tokens"], labels=mb["labels"]).backward()
    launched_after_backward = [b.launched for b in ddp.buckets]
    ddp.finish_grad_sync()
    diff = _max_grad_diff(ddp, _reference_grads(data))
    sizes = [b.end - b.start for b in ddp.buckets]
    state.destroy_model_parallel()
    return {"at_embedding": seen_at_embedding[0], "after_backward": launched_after_backward, "diff": diff,
            "bucket_sizes": sizes, "num_params": sum(p.numel() for p in ddp.module.parameters()),
            "buffer": ddp.grad_buffer.numel()}


def _no_sync_accumulation(rank, world):
    """Two micro-batches, the first under no_sync: the averaged sum equals the reference."""
    state.initialize_model_parallel()
    ddp = _build()
    data = [make_microbatches(2, 2, 8, 64, seed=60 + r) for r in range(world)]
    with ddp.no_sync():
        (ddp(data[rank][0]["tokens"], labels=data[rank][0]["labels"]) / 2).backward()
    launched_in_no_sync = any(b.launched for b in ddp.buckets)
    (ddp(data[rank][1]["tokens"], labels=data[rank][1]["labels"]) / 2).backward()
    ddp.finish_grad_sync()
    diff = _max_grad_diff(ddp, _reference_grads(data))
    state.destroy_model_parallel()
    return launched_in_no_sync, diff


def _nan_skips_update(rank, world):
    """A NaN gradient on one rank: every rank skips the step and keeps its weights."""
    from megasnow.parallel.optimizer import build_optimizer
    from megasnow.parallel.pipeline.schedules import forward_backward

    state.initialize_model_parallel()
    out = {}
    for distributed in (False, True):
        from megasnow.parallel.parallelize import ParallelConfig, build_model

        chunks = build_model(StandInConfig(), ParallelConfig(use_distributed_optimizer=distributed), SEED,
                             model_factory=stand_in_factory)
        opt = build_optimizer(chunks, 1e-2, 0.0, (0.9, 0.95), 1e-8, 1.0, distributed)
        before = [p.detach().clone() for p in chunks[0].parameters()]
        opt.zero_grad()
        handle = None
        if rank == 0:
            handle = chunks[0].module.layers["1"][0].weight.register_hook(lambda g: torch.full_like(g, float("nan")))
        forward_backward(chunks, make_microbatches(2, 2, 8, 64, seed=70 + rank))
        updated, norm = opt.step()
        unchanged = all(torch.equal(a, p) for a, p in zip(before, chunks[0].parameters()))
        # The next clean step updates again.
        opt.zero_grad()
        if handle is not None:
            handle.remove()
        forward_backward(chunks, make_microbatches(2, 2, 8, 64, seed=80 + rank))
        updated_next, norm_next = opt.step()
        out[distributed] = (updated, norm, unchanged, updated_next, norm_next)
    state.destroy_model_parallel()
    return out


def two_rank_checks(rank, world):
    return {"overlap": _overlap_and_average(rank, world, True),
            "no_overlap": _overlap_and_average(rank, world, False),
            "no_sync": _no_sync_accumulation(rank, world),
            "nan": _nan_skips_update(rank, world)}


@pytest.fixture(scope="module")
def results():
    return two_rank_results("data_parallel")


def test_buckets_are_reduced_while_backward_runs(results):
    for r in results:
        o = r["overlap"]
        assert len(o["at_embedding"]) >= 3, "the test needs several buckets"
        # The buckets of the last layers were launched before backward reached the embedding.
        assert o["at_embedding"][0] and not all(o["at_embedding"])
        assert all(o["after_backward"])
        assert o["diff"] < 1e-6


def test_without_overlap_reduction_waits_for_finish(results):
    for r in results:
        o = r["no_overlap"]
        assert not any(o["at_embedding"]) and not any(o["after_backward"])
        assert o["diff"] < 1e-6


def test_buckets_split_evenly_over_data_parallel_ranks(results):
    o = results[0]["overlap"]
    assert all(size % 2 == 0 for size in o["bucket_sizes"])
    assert o["num_params"] <= o["buffer"] == sum(o["bucket_sizes"])


def test_no_sync_accumulates_locally_then_averages(results):
    for launched_in_no_sync, diff in (r["no_sync"] for r in results):
        assert not launched_in_no_sync
        assert diff < 1e-6


@pytest.mark.parametrize("distributed", [False, True])
def test_nan_gradient_skips_the_update_on_every_rank(results, distributed):
    for r in results:
        updated, norm, unchanged, updated_next, norm_next = r["nan"][distributed]
        assert not updated and math.isnan(norm) and unchanged
        assert updated_next and math.isfinite(norm_next)
