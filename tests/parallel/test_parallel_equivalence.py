"""Parallel training equals one process: TP+SP, PP (1F1B, interleaved), DP (+ZeRO-1), TP x PP on the tiny Llama.

Each layout trains 3 AdamW steps (clipping active) from the same seed and data; the per-micro-batch
losses, the global grad norms and every weight shard must match a single-process run within 1e-5.
Activation checkpointing (full, selective) is switched on in some layouts and off in the reference.
"""
from megasnow.parallel.spawn import run_processes
from tests.parallel.test_parallel_equivalence_support import (
    llama_factory,
    run_layout,
    tiny_llama_config,
    two_rank_results,
)

TOL = 1e-5

TWO_RANK_LAYOUTS = [
    ("tensor=2 + sequence parallel, full checkpointing", {"activation_checkpointing": "full"},
     {"tensor": 2, "sequence_parallel": True}),
    ("pipeline=2 1F1B", {}, {"pipeline": 2}),
    ("pipeline=2 interleaved, selective checkpointing", {"activation_checkpointing": "selective"},
     {"pipeline": 2, "virtual_pipeline": 2}),
    ("pipeline=2 untied head", {"tie_embeddings": False}, {"pipeline": 2}),
    ("data=2", {}, {"bucket_size_mb": 0.01}),
    ("data=2 no overlap", {}, {"bucket_size_mb": 0.01, "overlap_grad_reduce": False}),
    ("data=2 distributed optimizer", {}, {"use_distributed_optimizer": True, "bucket_size_mb": 0.01}),
]

FOUR_RANK_LAYOUTS = [
    ("tensor=2 x pipeline=2", {}, {"tensor": 2, "pipeline": 2}),
    ("tensor=2 x pipeline=2 interleaved + sequence parallel", {},
     {"tensor": 2, "pipeline": 2, "virtual_pipeline": 2, "sequence_parallel": True}),
    ("pipeline=4 1F1B", {"num_layers": 8}, {"pipeline": 4}),
    ("pipeline=4 interleaved", {"num_layers": 8}, {"pipeline": 4, "virtual_pipeline": 2}),
    ("tensor=2 x data=2 distributed optimizer + sequence parallel", {},
     {"tensor": 2, "sequence_parallel": True, "use_distributed_optimizer": True, "bucket_size_mb": 0.01}),
]


def _train_layouts(rank, world, layouts):
    out = []
    for name, model_overrides, parallel in layouts:
        reference_cfg = tiny_llama_config(**{k: v for k, v in model_overrides.items()
                                             if k != "activation_checkpointing"})
        result = run_layout(tiny_llama_config(**model_overrides), llama_factory, parallel, reference_cfg=reference_cfg)
        out.append((name, result))
    return out


def _check(results_by_rank, layouts):
    for name, *_ in layouts:
        losses = 0
        for rank, results in enumerate(results_by_rank):
            r = dict(results)[name]
            assert r["loss"] < TOL, f"{name}: rank {rank} loss differs by {r['loss']}"
            assert r["norm"] < TOL, f"{name}: rank {rank} grad norm differs by {r['norm']}"
            assert r["weight"] < TOL, f"{name}: rank {rank} weight {r['where']} differs by {r['weight']}"
            losses += r["num_losses"]
        assert losses > 0, f"{name}: no rank reported losses"


def two_rank_checks(rank, world):
    return _train_layouts(rank, world, TWO_RANK_LAYOUTS)


def test_two_rank_layouts_match_single_process():
    _check(two_rank_results("equivalence"), TWO_RANK_LAYOUTS)


def test_four_rank_layouts_match_single_process():
    _check(run_processes(_train_layouts, 4, (FOUR_RANK_LAYOUTS,), timeout_s=300), FOUR_RANK_LAYOUTS)
