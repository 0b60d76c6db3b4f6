"""Cross-entropy Triton kernels (interpreter on CPU): full CE against the reference, ignore_index edge
cases, in-place gradients, and the vocab-parallel pieces recombined from shards."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from megasnow.kernels import ce_partial_grad, ce_partial_stats, cross_entropy
from megasnow.kernels.cross_entropy import cross_entropy_reference
from tests.kernels.helpers import LargeAllocations, assert_close_by_dtype, assert_same_function

VOCAB = 1000 + 7


@pytest.fixture
def small_blocks(monkeypatch):
    """Force 256-wide vocabulary blocks so the online softmax crosses block boundaries (and a ragged tail)."""
    # importlib: the package attribute `cross_entropy` is the function, which shadows the module
    monkeypatch.setattr(importlib.import_module("megasnow.kernels.cross_entropy"), "_MAX_BLOCK_V", 256)


def _targets(n, vocab, ignored=()):
    target = torch.randint(0, vocab, (n,))
    target[list(ignored)] = -100
    return target


def _ce(impl, target, **kw):
    return lambda logits: cross_entropy(logits, target, impl=impl, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_triton_matches_reference(dtype, small_blocks, poisoned_allocations):
    logits = (torch.randn(6, VOCAB) * 4).to(dtype)
    target = _targets(6, VOCAB, ignored=(1, 4))
    assert_same_function(_ce("triton", target), _ce("reference", target), [logits], dtype, f"ce {dtype}")


def test_cross_entropy_single_row_and_large_logits(small_blocks, poisoned_allocations):
    # logits around 200 overflow a naive fp32 exp (e^200 > 3.4e38); the online max keeps it finite
    logits = torch.randn(1, VOCAB) * 20 + 200
    target = torch.tensor([VOCAB - 1])  # target in the ragged last block
    assert_same_function(_ce("triton", target), _ce("reference", target), [logits], torch.float32, "ce 1 row")


def test_cross_entropy_all_ignored_gives_zero_loss_and_zero_grad(poisoned_allocations):
    logits = torch.randn(4, VOCAB, requires_grad=True)
    loss = cross_entropy(logits, torch.full((4,), -100), impl="triton")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_matches_torch_and_custom_ignore_index():
    logits = torch.randn(5, 50)
    target = torch.tensor([3, 7, 7, 0, 49])
    expected = F.cross_entropy(logits, target, ignore_index=7)
    torch.testing.assert_close(cross_entropy(logits, target, ignore_index=7, impl="triton"), expected)
    torch.testing.assert_close(cross_entropy_reference(logits, target, ignore_index=7), expected)


def test_cross_entropy_inplace_grad_and_grad_output_scaling(small_blocks):
    logits = torch.randn(3, VOCAB, dtype=torch.bfloat16)
    target = _targets(3, VOCAB, ignored=(0,))
    ref = logits.clone().float().requires_grad_()
    (cross_entropy_reference(ref, target) * 2.5).backward()

    leaf = logits.clone().requires_grad_()
    buffer = leaf * 1  # a non-leaf activation, as the model's logits are
    (cross_entropy(buffer, target, impl="triton", inplace_grad=True) * 2.5).backward()
    assert_close_by_dtype(leaf.grad, ref.grad.to(torch.bfloat16), torch.bfloat16, "inplace grad")
    assert buffer.data_ptr() == buffer.data_ptr() and torch.equal(buffer, leaf.grad)  # grad lives in the buffer


@pytest.mark.parametrize("inplace_grad", [False, True])
def test_cross_entropy_memory_no_fp32_logits_and_at_most_one_gradient_buffer(inplace_grad):
    n = 8
    hidden = torch.randn(n, 4, dtype=torch.bfloat16, requires_grad=True)
    head = torch.randn(VOCAB, 4, dtype=torch.bfloat16, requires_grad=True)
    logits = hidden @ head.t()  # as in the model: an activation, whose matmul backward makes no [N, V] tensor
    target = _targets(n, VOCAB)
    with LargeAllocations(n * VOCAB) as fwd:
        loss = cross_entropy(logits, target, impl="triton", inplace_grad=inplace_grad)
    with LargeAllocations(n * VOCAB) as bwd:
        loss.backward()
    assert fwd.seen == []  # the forward streams the logits: nothing logits-sized, no fp32 upcast
    # backward: one logits-sized gradient in the logits dtype (none when written over the logits)
    grads = [dtype for name, dtype in bwd.seen if "empty" in name]
    assert grads == ([] if inplace_grad else [torch.bfloat16]), bwd.seen
    assert all(dtype == torch.bfloat16 for _, dtype in bwd.seen), bwd.seen
    # the reference, by contrast, upcasts the whole logits to fp32
    with LargeAllocations(n * VOCAB) as ref:
        cross_entropy(logits.detach(), target, impl="reference")
    assert torch.float32 in [dtype for _, dtype in ref.seen]


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_vocab_parallel_pieces_recombine_to_full_cross_entropy(impl, small_blocks, poisoned_allocations):
    n, dtype = 7, torch.bfloat16
    logits = (torch.randn(n, VOCAB) * 3).to(dtype)
    target = _targets(n, VOCAB, ignored=(2,))
    bounds = [0, 300, 301 + 400, VOCAB]  # three uneven shards
    shards = [(start, logits[:, start:end]) for start, end in zip(bounds[:-1], bounds[1:])]

    # what a TP rank computes locally, then what the all-reduces combine
    stats = [ce_partial_stats(shard, target, start, impl=impl) for start, shard in shards]
    global_max = torch.stack([s[0] for s in stats]).max(0).values
    sumexp = sum(s[1] * torch.exp(s[0] - global_max) for s in stats)
    target_logit = sum(s[2] for s in stats)
    lse = global_max + torch.log(sumexp)
    valid = target != -100
    loss = torch.where(valid, lse - target_logit, 0.0).sum() / valid.sum()

    full = logits.float().requires_grad_()
    expected = cross_entropy_reference(full, target)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)

    grad_scale = valid.float() / valid.sum()
    grads = [ce_partial_grad(shard, target, start, lse, grad_scale, impl=impl) for start, shard in shards]
    for (start, shard), grad in zip(shards, grads):
        assert grad.dtype == dtype and grad.shape == shard.shape
    assert_close_by_dtype(torch.cat(grads, dim=1), full.grad.to(dtype), dtype, "sharded grads")


def test_partial_stats_target_outside_shard_is_zero():
    logits = torch.randn(3, 10)
    target = torch.tensor([5, 15, -100])  # in shard [10, 20): only row 1
    _, _, target_logit = ce_partial_stats(logits, target, vocab_start=10, impl="triton")
    torch.testing.assert_close(target_logit, torch.tensor([0.0, logits[1, 5].item(), 0.0]))


def test_inplace_grad_refuses_leaf_logits():
    with pytest.raises(ValueError, match="leaf"):
        cross_entropy(torch.randn(2, 10, requires_grad=True), torch.tensor([1, 2]), impl="triton", inplace_grad=True)


def test_cross_entropy_shape_errors():
    with pytest.raises(ValueError, match="target"):
        cross_entropy(torch.randn(3, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        cross_entropy(torch.randn(2, 3, 10), torch.zeros(6, dtype=torch.long))
