"""Tensor-parallel building blocks on 2 gloo ranks against unsharded fp32 math: column/row/vocab layers (with and
without sequence parallelism), mappings, vocab-parallel cross entropy, the RNG tracker, SP gradient sync."""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megasnow.parallel import state
from megasnow.parallel.spawn import run_processes
from megasnow.parallel.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    allreduce_sequence_parallel_grads,
    copy_full_into_,
    get_rng_tracker,
    model_parallel_seed,
    scatter_to_sequence_parallel_region,
    shard_full_tensor,
    unshard_tensors,
    vocab_parallel_cross_entropy,
)
from megasnow.parallel.tensor_parallel.layers import mark_sequence_parallel

TOL = dict(atol=1e-6, rtol=1e-5)


def _grad_of(fn, *inputs, grad_out):
    """Run fn on leaf copies of inputs, backprop grad_out; return output and input grads."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def _seq_shard(t, rank):
    return t.chunk(2, dim=1)[rank].contiguous()


def _check_column(rank, world):
    x, w = torch.randn(2, 4, 6), torch.randn(12, 6)
    gy = torch.randn(2, 4, 12)
    y_ref, (gx_ref, gw_ref) = _grad_of(lambda a, b: F.linear(a, b), x, w, grad_out=gy)
    # gather_output=True: every rank gets the full output.
    layer = ColumnParallelLinear(6, 12, gather_output=True)
    copy_full_into_(layer.weight, w)
    xi = x.clone().requires_grad_(True)
    y = layer(xi)
    y.backward(gy)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(xi.grad, gx_ref, **TOL)  # all-reduced over ranks
    torch.testing.assert_close(layer.weight.grad, gw_ref.chunk(world)[rank], **TOL)
    # Fused segments (q, k, v): each rank owns its part of every segment.
    parts = (4, 4, 4)
    fused = ColumnParallelLinear(6, 12, partitions=parts, sequence_parallel=True)
    copy_full_into_(fused.weight, w)
    assert torch.equal(fused.weight, torch.cat([w[0:2], w[4:6], w[8:10]] if rank == 0 else [w[2:4], w[6:8], w[10:12]]))
    xs = _seq_shard(x, rank).requires_grad_(True)  # sequence-parallel input: this rank's tokens
    y = fused(xs)  # all-gathered sequence, local output columns
    y.backward(shard_full_tensor(gy, 2, parts, rank, world))
    torch.testing.assert_close(y, shard_full_tensor(y_ref, 2, parts, rank, world), **TOL)
    torch.testing.assert_close(xs.grad, _seq_shard(gx_ref, rank), **TOL)  # reduce-scattered
    torch.testing.assert_close(fused.weight.grad, shard_full_tensor(gw_ref, 0, parts, rank, world), **TOL)


def _check_row(rank, world):
    x, w = torch.randn(2, 4, 8), torch.randn(5, 8)
    gy = torch.randn(2, 4, 5)
    y_ref, (gx_ref, gw_ref) = _grad_of(lambda a, b: F.linear(a, b), x, w, grad_out=gy)
    layer = RowParallelLinear(8, 5, input_is_parallel=False)
    copy_full_into_(layer.weight, w)
    xi = x.clone().requires_grad_(True)
    y = layer(xi)
    y.backward(gy)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(xi.grad, gx_ref, **TOL)
    torch.testing.assert_close(layer.weight.grad, gw_ref.chunk(world, dim=1)[rank], **TOL)
    sp = RowParallelLinear(8, 5, input_is_parallel=True, sequence_parallel=True)
    copy_full_into_(sp.weight, w)
    xs = x.chunk(world, dim=-1)[rank].clone().requires_grad_(True)
    y = sp(xs)  # reduce-scattered: this rank's tokens, full features
    y.backward(_seq_shard(gy, rank))
    torch.testing.assert_close(y, _seq_shard(y_ref, rank), **TOL)
    torch.testing.assert_close(xs.grad, gx_ref.chunk(world, dim=-1)[rank], **TOL)
    torch.testing.assert_close(sp.weight.grad, gw_ref.chunk(world, dim=1)[rank], **TOL)


def _check_embedding(rank, world):
    w = torch.randn(16, 6)
    ids = torch.tensor([[0, 7, 8, 15], [3, 12, 12, 9]])  # both halves of the vocabulary
    gy = torch.randn(2, 4, 6)
    y_ref, (gw_ref,) = _grad_of(lambda b: F.embedding(ids, b), w, grad_out=gy)
    for sp in (False, True):
        emb = VocabParallelEmbedding(16, 6, sequence_parallel=sp)
        copy_full_into_(emb.weight, w)
        y = emb(ids)
        y.backward(_seq_shard(gy, rank) if sp else gy)
        torch.testing.assert_close(y, _seq_shard(y_ref, rank) if sp else y_ref, **TOL)
        torch.testing.assert_close(emb.weight.grad, gw_ref.chunk(world)[rank], **TOL)


def _check_sequence_scatter(rank, world):
    x = torch.randn(2, 6, 3, requires_grad=True)
    y = scatter_to_sequence_parallel_region(x)
    assert torch.equal(y, x.detach()[:, 3 * rank:3 * rank + 3])
    g = torch.full_like(y, float(rank + 1))
    y.backward(g)
    assert torch.equal(x.grad[:, :3], torch.ones(2, 3, 3)) and torch.equal(x.grad[:, 3:], torch.full((2, 3, 3), 2.0))


def _check_vocab_parallel_cross_entropy(rank, world):
    logits = torch.randn(10, 16) * 3
    target = torch.randint(0, 13, (10,))
    target[2] = -100
    for vocab in (16, 13):  # 13: the last shard's 3 padding columns are sliced off
        full = logits[:, :vocab]
        loss_ref, (g_ref,) = _grad_of(lambda z: F.cross_entropy(z, target, ignore_index=-100), full,
                                      grad_out=torch.tensor(2.0))
        start = rank * 8
        cols = min(8, vocab - start)
        shard = logits[:, start:start + cols].clone().requires_grad_(True)
        loss = vocab_parallel_cross_entropy(shard, target, vocab_start=start, impl="reference")
        (2.0 * loss).backward()
        torch.testing.assert_close(loss, loss_ref, **TOL)
        torch.testing.assert_close(shard.grad, g_ref[:, start:start + cols], **TOL)
    # The Triton partial-statistics kernels (interpreter on CPU) give the same loss.
    shard = logits[:, rank * 8:rank * 8 + 8]
    torch.testing.assert_close(vocab_parallel_cross_entropy(shard, target, impl="triton"),
                               F.cross_entropy(logits, target, ignore_index=-100), **TOL)
    everything_ignored = torch.full((10,), -100)
    assert vocab_parallel_cross_entropy(shard, everything_ignored).item() == 0.0


def _gather(t):
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def _check_rng_tracker(rank, world):
    model_parallel_seed(123)
    before = torch.rand(4)
    with get_rng_tracker().fork():
        forked = torch.rand(4)
    after = torch.rand(4)
    b0, b1 = _gather(before)
    f0, f1 = _gather(forked)
    assert torch.equal(b0, b1), "the default stream must be identical on TP ranks"
    assert not torch.equal(f0, f1), "the model-parallel stream must differ per TP rank"
    torch.manual_seed(123)
    assert torch.equal(torch.rand(4), before) and torch.equal(torch.rand(4), after), "fork must restore the default"
    with pytest.raises(KeyError):
        with get_rng_tracker().fork("never-added"):
            pass


def _check_sequence_parallel_grad_sync(rank, world):
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(3))
    mark_sequence_parallel(p)
    p.grad, q.grad = torch.full((3,), rank + 1.0), torch.full((3,), rank + 1.0)
    module = torch.nn.Module()
    module.p, module.q = p, q
    allreduce_sequence_parallel_grads(module)
    assert torch.equal(p.grad, torch.full((3,), 3.0)) and torch.equal(q.grad, torch.full((3,), rank + 1.0))


def _tp2_worker(rank, world):
    state.initialize_model_parallel(tensor_size=2)
    torch.manual_seed(0)  # same full tensors on both ranks
    for check in (_check_column, _check_row, _check_embedding, _check_sequence_scatter,
                  _check_vocab_parallel_cross_entropy, _check_rng_tracker, _check_sequence_parallel_grad_sync):
        check(rank, world)
    return "ok"


def test_tensor_parallel_layers_match_unsharded_math():
    assert run_processes(_tp2_worker, 2, timeout_s=170) == ["ok", "ok"]


def test_shard_and_unshard_round_trip():
    full = torch.arange(24.0).reshape(12, 2)
    parts = (6, 3, 3)
    shards = [shard_full_tensor(full, 0, parts, r, 3) for r in range(3)]
    assert shards[1][:, 0].tolist() == [4.0, 6.0, 14.0, 20.0]  # rows 2-3 of segment 0, row 7 of 1, row 10 of 2
    assert torch.equal(unshard_tensors(shards, 0, parts), full)
    with pytest.raises(ValueError, match="not divisible"):
        shard_full_tensor(full, 0, parts, 0, 4)


def test_one_rank_layers_are_plain_linear_and_embedding():
    torch.manual_seed(0)
    col, row, emb = ColumnParallelLinear(6, 4), RowParallelLinear(4, 3), VocabParallelEmbedding(10, 6)
    for layer in (col, row, emb):
        torch.nn.init.normal_(layer.weight)
    x = torch.randn(2, 5, 6)
    assert torch.equal(col(x), F.linear(x, col.weight))
    assert torch.equal(row(col(x)), F.linear(F.linear(x, col.weight), row.weight))
    ids = torch.tensor([[1, 9]])
    assert torch.equal(emb(ids), F.embedding(ids, emb.weight))
