"""ZeRO-1 distributed optimizer on 2 gloo ranks: disjoint shards, checkpoint round trip, bf16 weights + fp32 masters."""
import copy

import pytest
import torch

from megasnow.parallel import state
from tests.parallel.test_parallel_equivalence_support import (
    StandInConfig,
    make_microbatches,
    stand_in_factory,
    two_rank_results,
)

SEED = 5


def _setup(distributed, params_dtype="fp32"):
    from megasnow.parallel.optimizer import build_optimizer
    from megasnow.parallel.parallelize import ParallelConfig, build_model

    pcfg = ParallelConfig(use_distributed_optimizer=distributed, bucket_size_mb=0.003, params_dtype=params_dtype)
    chunks = build_model(StandInConfig(), pcfg, SEED, model_factory=stand_in_factory)
    return chunks, build_optimizer(chunks, 1e-2, 0.1, (0.9, 0.95), 1e-8, 1.0, distributed)


def _train_step(chunks, opt, step, rank):
    from megasnow.parallel.pipeline.schedules import forward_backward

    opt.zero_grad()
    forward_backward(chunks, make_microbatches(2, 2, 8, 64, seed=1000 * step + rank))
    return opt.step()


def _weights(chunks):
    return [p.detach().clone() for p in chunks[0].parameters()]


def _shards_and_resume(rank, world):
    state.initialize_model_parallel()
    chunks, opt = _setup(True)
    ddp = chunks[0]
    owned = []  # (start, end) of every master segment in the chunk's buffer
    for bucket in ddp.buckets:
        lo, hi = ddp.shard_range(bucket)
        owned.append((lo, hi))
    master_numel = sum(e.master.numel() for e in opt.entries)
    for s in range(2):
        _train_step(chunks, opt, s, rank)
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() shares the live Adam tensors
    saved_model = {k: v.clone() for k, v in ddp.state_dict().items()}
    _train_step(chunks, opt, 2, rank)
    uninterrupted = _weights(chunks)
    adam_numel = sum(v["exp_avg"].numel() for v in opt.optimizer.state_dict()["state"].values())

    # Resume into a freshly built model and optimizer.
    chunks2, opt2 = _setup(True)
    chunks2[0].load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train_step(chunks2, opt2, 2, rank)
    resumed_diff = max(float((a - b).abs().max()) for a, b in zip(uninterrupted, _weights(chunks2)))

    # The plain optimizer over the same steps gives the same weights.
    chunks3, opt3 = _setup(False)
    for s in range(3):
        _train_step(chunks3, opt3, s, rank)
    plain_diff = max(float((a - b).abs().max()) for a, b in zip(uninterrupted, _weights(chunks3)))
    state.destroy_model_parallel()
    return {"owned": owned, "master_numel": master_numel, "adam_numel": adam_numel,
            "num_params": sum(p.numel() for p in ddp.module.parameters()), "resumed_diff": resumed_diff,
            "plain_diff": plain_diff, "weights": [w.sum().item() for w in uninterrupted]}


def _bf16(rank, world):
    """bf16 model weights, fp32 masters: after each step the model is the masters rounded to bf16."""
    state.initialize_model_parallel()
    out = {}
    for distributed in (False, True):
        chunks, opt = _setup(distributed, "bf16")
        for s in range(2):
            updated, _ = _train_step(chunks, opt, s, rank)
            assert updated
        dtypes = {p.dtype for p in chunks[0].parameters()}
        master_dtypes = {e.master.dtype for e in opt.entries}
        grad_dtypes = {p.main_grad.dtype for p in chunks[0].parameters()}
        rounded = all(torch.equal(e.model_view.reshape(-1), e.master.to(torch.bfloat16).reshape(-1))
                      for e in opt.entries)
        masters = torch.cat([e.master.reshape(-1) for e in opt.entries])
        opt.reset_state()  # a new phase: Adam moments go, fp32 masters stay
        kept = torch.equal(masters, torch.cat([e.master.reshape(-1) for e in opt.entries]))
        out[distributed] = (dtypes, master_dtypes, grad_dtypes, rounded, masters.sum().item(),
                            kept and len(opt.optimizer.state) == 0)
    state.destroy_model_parallel()
    return out


def two_rank_checks(rank, world):
    return {"zero": _shards_and_resume(rank, world), "bf16": _bf16(rank, world)}


@pytest.fixture(scope="module")
def results():
    return two_rank_results("distributed_optimizer")


def test_each_rank_owns_a_disjoint_half_of_every_bucket(results):
    a, b = results[0]["zero"], results[1]["zero"]
    for (lo0, hi0), (lo1, hi1) in zip(a["owned"], b["owned"]):
        assert hi0 == lo1 and hi0 - lo0 == hi1 - lo1
    # Masters and Adam moments cover the parameters once across ranks, about half on each.
    assert a["master_numel"] + b["master_numel"] == a["num_params"]
    assert a["adam_numel"] == a["master_numel"] and b["adam_numel"] == b["master_numel"]
    assert abs(a["master_numel"] - b["master_numel"]) <= 0.2 * a["num_params"]


def test_all_ranks_hold_the_same_full_weights(results):
    assert results[0]["zero"]["weights"] == results[1]["zero"]["weights"]


def test_resume_from_state_dict_continues_identically(results):
    for r in results:
        assert r["zero"]["resumed_diff"] == 0.0


def test_distributed_equals_plain_optimizer(results):
    for r in results:
        assert r["zero"]["plain_diff"] < 1e-6


@pytest.mark.parametrize("distributed", [False, True])
def test_bf16_weights_with_fp32_masters(results, distributed):
    for r in results:
        dtypes, master_dtypes, grad_dtypes, rounded, _, reset_keeps_masters = r["bf16"][distributed]
        assert dtypes == {torch.bfloat16} and master_dtypes == {torch.float32} and grad_dtypes == {torch.float32}
        assert rounded and reset_keeps_masters


def test_bf16_distributed_and_plain_agree(results):
    # Masters: sum over the plain optimizer's full copy equals the sum of both ranks' shards.
    plain = results[0]["bf16"][False][4]
    sharded = results[0]["bf16"][True][4] + results[1]["bf16"][True][4]
    assert sharded == pytest.approx(plain, rel=1e-5)
