"""Pipeline parallelism on 2 gloo ranks: p2p exchange, 1F1B and interleaved schedules, uneven splits, forward-only.

Uses the stand-in model (plain layers, same pipeline protocol as LlamaModel) so the schedules are
checked on their own; the Llama combinations are in test_parallel_equivalence.py.
"""
import pytest
import torch

from megasnow.parallel import state
from tests.parallel.test_parallel_equivalence_support import (
    StandInConfig,
    make_microbatches,
    run_layout,
    stand_in_factory,
    two_rank_results,
)

TOL = 1e-5

LAYOUTS = [
    # (name, model overrides, parallel config, micro-batches per step)
    ("1F1B, more micro-batches than stages", {}, {"pipeline": 2}, 3),
    ("1F1B, one micro-batch", {}, {"pipeline": 2}, 1),
    ("1F1B, untied head", {"tie_embeddings": False}, {"pipeline": 2}, 4),
    ("1F1B, uneven split", {}, {"pipeline": 2, "pipeline_layers": [1, 3]}, 2),
    ("interleaved, micro-batches = stages", {}, {"pipeline": 2, "virtual_pipeline": 2}, 2),
    ("interleaved, 3 chunks per stage", {"num_layers": 6}, {"pipeline": 2, "virtual_pipeline": 3}, 4),
    ("interleaved, uneven, untied", {"num_layers": 6, "tie_embeddings": False},
     {"pipeline": 2, "virtual_pipeline": 2, "pipeline_layers": [1, 2, 2, 1]}, 6),
]


def _p2p_ring(rank, world):
    """pp=2: each rank's next and previous stage are the same rank; both directions in one exchange."""
    from megasnow.parallel.pipeline.p2p import communicate

    state.initialize_model_parallel(1, 2)
    act = torch.full((2, 3), 10.0 + rank)
    grad = torch.full((2, 3), 20.0 + rank)
    from_prev, from_next = communicate(send_next=act, send_prev=grad, recv_prev=True, recv_next=True,
                                       shape=(2, 3), dtype=torch.float32)
    state.destroy_model_parallel()
    return float(from_prev[0, 0]), float(from_next[0, 0]), from_prev.requires_grad


def two_rank_checks(rank, world):
    out = {"p2p": _p2p_ring(rank, world)}
    for name, model_overrides, parallel, n in LAYOUTS:
        out[name] = run_layout(StandInConfig(**model_overrides), stand_in_factory, parallel, microbatches_per_rank=n)
    out["forward_only"] = _forward_only(rank)
    out["bad_count"] = _interleaved_needs_multiple(rank)
    return out


def _forward_only(rank):
    """forward_only returns the same losses as a training pass and leaves gradients untouched."""
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.parallel.pipeline.schedules import forward_backward

    cfg = StandInConfig()
    ref = stand_in_factory(cfg)
    ref.init_weights(7)
    data = make_microbatches(4, 2, 8, cfg.vocab_size, seed=3)
    with torch.no_grad():
        expected = [float(ref(mb["tokens"], labels=mb["labels"])) for mb in data]
    results = []
    for virtual in (None, 2):
        pcfg = ParallelConfig(pipeline=2, virtual_pipeline=virtual)
        state.initialize_model_parallel(1, 2, virtual)
        chunks = build_model(cfg, pcfg, 7, model_factory=stand_in_factory)
        losses = forward_backward(chunks, data, forward_only=True)
        grads = sum(float(c.grad_buffer.abs().sum()) for c in chunks)
        results.append((losses, grads))
        state.destroy_model_parallel()
    return expected, results


def _interleaved_needs_multiple(rank):
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.parallel.pipeline.schedules import ScheduleError, forward_backward

    state.initialize_model_parallel(1, 2, 2)
    chunks = build_model(StandInConfig(), ParallelConfig(pipeline=2, virtual_pipeline=2), 0,
                         model_factory=stand_in_factory)
    try:
        forward_backward(chunks, make_microbatches(3, 1, 4, 64))
    except ScheduleError as e:
        return str(e)
    finally:
        state.destroy_model_parallel()
    return None


@pytest.fixture(scope="module")
def results():
    return two_rank_results("pipeline")


def test_p2p_exchanges_both_directions_with_one_neighbour(results):
    # rank 0 receives rank 1's activation from "prev" and rank 1's gradient from "next", and vice versa.
    assert results[0]["p2p"] == (11.0, 21.0, True)
    assert results[1]["p2p"] == (10.0, 20.0, True)


@pytest.mark.parametrize("name", [layout[0] for layout in LAYOUTS])
def test_schedule_matches_single_process(results, name):
    for rank, r in enumerate(results):
        res = r[name]
        assert res["loss"] < TOL and res["norm"] < TOL, f"rank {rank}: {res}"
        assert res["weight"] < TOL, f"rank {rank}: weight {res['where']} differs by {res['weight']}"
    # Only the last stage reports losses: 3 steps x micro-batches.
    assert results[0][name]["num_losses"] == 0
    assert results[1][name]["num_losses"] == 3 * dict((n, m) for n, _, _, m in LAYOUTS)[name]


def test_forward_only_returns_losses_without_gradients(results):
    expected, runs = results[1]["forward_only"]
    for losses, grads in runs:
        assert losses == pytest.approx(expected, abs=TOL)
        assert grads == 0.0
    for losses, grads in results[0]["forward_only"][1]:
        assert losses == [] and grads == 0.0


def test_interleaved_refuses_micro_batch_count_not_multiple_of_stages(results):
    for r in results:
        assert r["bad_count"] is not None and "multiple of the pipeline size (2)" in r["bad_count"]
