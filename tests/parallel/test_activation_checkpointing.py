"""Activation checkpointing (full: whole layers; selective: the attention core) gives bit-identical losses and
gradients, and really recomputes what it should. (Under TP=2 + sequence parallelism: tests/parallel/test_tp_model.py.)"""
import pytest
import torch

import megasnow.model.llama as llama
from megasnow.model import LlamaModel, get_preset

SHAPE = dict(vocab_size=200, hidden_size=32, ffn_hidden_size=48, num_layers=2, max_seq_len=32)


def _loss_and_grads(cfg, tokens, labels, document_ids=None):
    model = LlamaModel(cfg, init_seed=4)
    model.train()
    loss = model(tokens, labels=labels, document_ids=document_ids)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode, kernels", [("full", "reference"), ("selective", "reference"), ("full", "triton")])
def test_checkpointing_gives_identical_gradients(mode, kernels):
    cfg = get_preset("tiny-gqa", **SHAPE, kernels=kernels)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 200, (2, 10), generator=g)
    labels = torch.randint(0, 200, (2, 10), generator=g)
    doc_ids = torch.tensor([[0] * 4 + [1] * 6, [0] * 10])
    loss_ref, grads_ref = _loss_and_grads(cfg, tokens, labels, doc_ids)
    loss, grads = _loss_and_grads(cfg.replace(activation_checkpointing=mode), tokens, labels, doc_ids)
    assert torch.equal(loss, loss_ref)
    for name in grads_ref:
        assert torch.equal(grads[name], grads_ref[name]), name


def _count_calls(mode, monkeypatch):
    cfg = get_preset("tiny", **SHAPE, kernels="reference", activation_checkpointing=mode)
    model = LlamaModel(cfg)
    calls = {"mlp": 0, "attention_core": 0}
    model.layers["0"].mlp.register_forward_pre_hook(lambda *a: calls.__setitem__("mlp", calls["mlp"] + 1))
    real = llama.attention

    def counting_attention(*args, **kwargs):
        calls["attention_core"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(llama, "attention", counting_attention)
    tokens = torch.randint(0, 200, (1, 8))
    model(tokens, labels=tokens).backward()
    return calls["mlp"], calls["attention_core"]


def test_what_gets_recomputed(monkeypatch):
    assert _count_calls("none", monkeypatch) == (1, 2)  # 2 layers' attention cores, no recomputation
    assert _count_calls("full", monkeypatch) == (2, 4)  # whole layers run again in backward
    assert _count_calls("selective", monkeypatch) == (1, 4)  # only the attention core runs again
