"""The whole model under tensor parallelism (TP=2, gloo, fp32): init equals slicing the TP=1 init, and loss,
logits, every gradient and greedy generation equal the single-process model, with and without sequence
parallelism and activation checkpointing."""
import pytest
import torch

from megasnow.model import LlamaModel, ModelConfigError, get_preset
from megasnow.model.generate import generate
from megasnow.parallel import state
from megasnow.parallel.spawn import run_processes
from megasnow.parallel.tensor_parallel import allreduce_sequence_parallel_grads, shard_full_tensor

SEED = 9
TOL = dict(atol=1e-5, rtol=1e-5)
# vocab 200 pads to 256: rank 1's vocabulary shard holds 56 padding rows.
SHAPE = dict(vocab_size=200, hidden_size=32, ffn_hidden_size=48, num_layers=2, max_seq_len=32, kernels="reference")
VARIANTS = [  # (preset, sequence_parallel, activation_checkpointing)
    ("tiny-gqa", False, "none"),
    ("tiny-gqa", True, "full"),
    ("tiny-untied", True, "selective"),
]


def _batch():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 200, (2, 13), generator=g)
    labels = tokens[:, 1:].clone()
    labels[1, :4] = -100
    return tokens[:, :-1], labels


def _run(model, tokens, labels):
    model.zero_grad(set_to_none=True)
    loss = model(tokens, labels=labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _local(full, param, rank, world):
    """This rank's expected piece of a full tensor for `param`."""
    dim = getattr(param, "tensor_parallel_dim", None)
    return full if dim is None else shard_full_tensor(full, dim, param.tensor_parallel_partitions, rank, world)


def _worker(rank, world):
    tokens, labels = _batch()
    # Single-process reference, computed on every rank with a TP=1 layout.
    state.initialize_model_parallel(tensor_size=1)
    refs = {}
    for preset in {v[0] for v in VARIANTS}:
        full = LlamaModel(get_preset(preset, **SHAPE), init_seed=SEED)
        params = {n: p.detach().clone() for n, p in full.named_parameters()}
        loss, grads = _run(full, tokens, labels)
        with torch.no_grad():
            logits = full(tokens)
        refs[preset] = (params, loss, grads, logits, generate(full, [[3, 1, 4, 1, 5], [9, 2]], max_new_tokens=6))
    state.destroy_model_parallel()

    state.initialize_model_parallel(tensor_size=2)
    for preset, sp, ckpt in VARIANTS:
        cfg = get_preset(preset, **SHAPE, sequence_parallel=sp, activation_checkpointing=ckpt)
        model = LlamaModel(cfg, init_seed=SEED)
        params, loss_ref, grads_ref, logits_ref, generated_ref = refs[preset]
        where = f"{preset} sp={sp} ckpt={ckpt}"
        for name, p in model.named_parameters():
            assert torch.equal(p, _local(params[name], p, rank, world)), f"{where}: init of {name} is not a slice"
        loss, grads = _run(model, tokens, labels)
        if sp:
            allreduce_sequence_parallel_grads(model)
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.testing.assert_close(loss, loss_ref, **TOL, msg=f"{where}: loss")
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], _local(grads_ref[name], p, rank, world), **TOL,
                                       msg=f"{where}: grad of {name}")
        with torch.no_grad():
            torch.testing.assert_close(model(tokens), logits_ref, **TOL, msg=f"{where}: logits")
        if not sp:
            assert generate(model, [[3, 1, 4, 1, 5], [9, 2]], max_new_tokens=6) == generated_ref
    # Shapes the TP size cannot split are refused when the model is built, naming what to change.
    with pytest.raises(ModelConfigError, match="does not divide model.num_kv_heads"):
        LlamaModel(get_preset("tiny", **SHAPE, num_kv_heads=1))
    with pytest.raises(ModelConfigError, match="make_vocab_size_divisible_by"):
        LlamaModel(get_preset("tiny", **{**SHAPE, "vocab_size": 63}, make_vocab_size_divisible_by=1))
    return "ok"


def test_tp2_model_matches_single_process():
    assert run_processes(_worker, 2, timeout_s=170) == ["ok", "ok"]
