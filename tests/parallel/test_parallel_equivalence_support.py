"""Shared pieces of the parallel tests: a stand-in pipeline model, data, and a single-process reference run.

The stand-in model follows LlamaModel's pipeline protocol (pre/post_process, layer_ids, set_input_tensor,
init_weights(seed) independent of the split) with plain layers, so schedules and DDP are tested on their own.
"""
import dataclasses
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 0.1, (0.9, 0.95), 1e-8


@dataclasses.dataclass
class StandInConfig:
    vocab_size: int = 64
    hidden_size: int = 16
    num_layers: int = 4
    tie_embeddings: bool = True
    sequence_parallel: bool = False

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)

    def validate_parallel(self, tp=1, sequence_parallel=False):
        if tp != 1:
            raise ValueError("the stand-in model has no tensor parallelism")


class StandInModel(nn.Module):
    """Embedding -> residual tanh-MLP layers -> norm -> head; losses are token-mean cross entropy."""

    def __init__(self, cfg, pre_process=True, post_process=True, layer_ids=None):
        super().__init__()
        self.cfg, self.pre_process, self.post_process = cfg, pre_process, post_process
        h = cfg.hidden_size
        ids = list(range(cfg.num_layers)) if layer_ids is None else list(layer_ids)
        self.embed = nn.Embedding(cfg.vocab_size, h) if pre_process else None
        self.layers = nn.ModuleDict({str(i): nn.Sequential(nn.Linear(h, 2 * h), nn.Tanh(), nn.Linear(2 * h, h))
                                     for i in ids})
        self.norm_weight = nn.Parameter(torch.ones(h)) if post_process else None
        self.lm_head = None
        if post_process and not (cfg.tie_embeddings and pre_process):
            self.lm_head = nn.Linear(h, cfg.vocab_size, bias=False)
        self.input_tensor = None

    def set_input_tensor(self, tensor):
        self.input_tensor = tensor

    @torch.no_grad()
    def init_weights(self, seed):
        for name, p in self.named_parameters():
            key = "embed.weight" if name == "lm_head.weight" and self.cfg.tie_embeddings else name
            g = torch.Generator().manual_seed(seed * 1000003 + zlib.crc32(key.encode()))
            if name == "norm_weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))

    def forward(self, tokens, labels=None, document_ids=None):
        x = self.embed(tokens) if self.pre_process else self.input_tensor
        for layer in self.layers.values():
            x = x + layer(x)
        if not self.post_process:
            return x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_weight
        weight = self.lm_head.weight if self.lm_head is not None else self.embed.weight
        logits = x @ weight.t()
        if labels is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def make_microbatches(num, batch, seq, vocab, seed=0, uneven_masks=False):
    """`num` micro-batches of random tokens; labels are shifted tokens with a few positions ignored.

    `uneven_masks`: each sequence instead ignores a random prefix of 0..seq labels (some sequences all of
    them), so micro-batches and data-parallel ranks count different numbers of tokens, as loss masks do.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        x = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        labels = x[:, 1:].clone()
        if uneven_masks:
            for row, masked in enumerate(torch.randint(0, seq + 1, (batch,), generator=g).tolist()):
                labels[row, :masked] = -100
        elif seq > 4:
            labels[:, :2] = -100
        out.append({"tokens": x[:, :-1].contiguous(), "labels": labels})
    return out


def param_groups(model, weight_decay=WEIGHT_DECAY):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def reference_run(model, microbatches_per_step, clip_grad):
    """Plain single-process AdamW training: per-micro-batch losses, grad norms, final named weights."""
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=BETAS, eps=EPS, foreach=False)
    losses, norms = [], []
    for mbs in microbatches_per_step:
        opt.zero_grad(set_to_none=True)
        step_losses = []
        for mb in mbs:
            loss = model(mb["tokens"], labels=mb["labels"])
            (loss / len(mbs)).backward()
            step_losses.append(float(loss.detach()))
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad if clip_grad else float("inf"))
        opt.step()
        losses.append(step_losses)
        norms.append(float(norm))
    return losses, norms, {n: p.detach().clone() for n, p in model.named_parameters()}


def reference_run_per_token(model, microbatches_per_step, clip_grad):
    """Like reference_run, but each step's loss is sum(token losses) / sum(tokens) over all its micro-batches,
    computed from the full logits (an independent route from the model's fused loss); the per-micro-batch
    losses reported are each micro-batch's own token mean (0 when it has no tokens)."""
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=BETAS, eps=EPS, foreach=False)
    losses, norms = [], []
    for mbs in microbatches_per_step:
        opt.zero_grad(set_to_none=True)
        sums = [F.cross_entropy(model(mb["tokens"]).flatten(0, 1).float(), mb["labels"].flatten(),
                                ignore_index=-100, reduction="sum") for mb in mbs]
        counts = [int((mb["labels"] != -100).sum()) for mb in mbs]
        (sum(sums) / sum(counts)).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad if clip_grad else float("inf"))
        opt.step()
        losses.append([s.item() / max(n, 1) for s, n in zip(sums, counts)])
        norms.append(float(norm))
    return losses, norms, {n: p.detach().clone() for n, p in model.named_parameters()}


def stand_in_factory(cfg, pre_process=True, post_process=True, layer_ids=None):
    return StandInModel(cfg, pre_process, post_process, layer_ids)


def llama_factory(cfg, pre_process=True, post_process=True, layer_ids=None):
    from megasnow.model.llama import LlamaModel

    return LlamaModel(cfg, pre_process=pre_process, post_process=post_process, layer_ids=layer_ids)


def tiny_llama_config(**overrides):
    from megasnow.model.config import get_preset

    base = dict(vocab_size=256, hidden_size=32, ffn_hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                max_seq_len=64, kernels="reference")
    base.update(overrides)
    return get_preset("tiny", **base)


def run_layout(model_cfg, factory, parallel_kwargs, steps=3, microbatches_per_rank=4, batch=2, seq=8, clip_grad=0.5,
               seed=1234, reference_cfg=None, per_token_loss=False):
    """Train `steps` steps with `parallel_kwargs` on this rank and compare with a one-process reference.

    `per_token_loss`: micro-batches with uneven loss masks, trained with forward_backward(per_token_loss=True)
    against the single-process per-token mean (reference_run_per_token).
    Returns the largest differences found (per-micro-batch losses, grad norms, weights) and where.
    Must run inside a process group (run_processes); builds and then forgets its process groups.
    """
    from megasnow.parallel import state
    from megasnow.parallel.optimizer import build_optimizer
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.parallel.pipeline.schedules import forward_backward

    pcfg = ParallelConfig(**parallel_kwargs)
    dp = pcfg.data_parallel_size(state.get_world_size())
    global_mbs = microbatches_per_rank * dp
    data = [make_microbatches(global_mbs, batch, seq, model_cfg.vocab_size, seed=100 + s, uneven_masks=per_token_loss)
            for s in range(steps)]

    # Reference: the whole model in this process, sizes 1 (the groups exist but nothing is split).
    state.destroy_model_parallel()
    state.initialize_model_parallel(1, 1)
    torch.manual_seed(0)
    ref_model = factory(reference_cfg or model_cfg)
    ref_model.init_weights(seed)
    reference = reference_run_per_token if per_token_loss else reference_run
    ref_losses, ref_norms, ref_weights = reference(ref_model, data, clip_grad)
    state.destroy_model_parallel()

    state.initialize_model_parallel(pcfg.tensor, pcfg.pipeline, pcfg.virtual_pipeline)
    torch.manual_seed(0)
    chunks = build_model(model_cfg, pcfg, seed, model_factory=factory)
    opt = build_optimizer(chunks, LR, WEIGHT_DECAY, BETAS, EPS, clip_grad, pcfg.use_distributed_optimizer)
    d = state.get_data_parallel_rank()
    out = {"loss": 0.0, "loss_rel": 0.0, "norm": 0.0, "weight": 0.0, "where": "", "num_losses": 0}
    for s in range(steps):
        opt.zero_grad()
        mine = data[s][d * microbatches_per_rank:(d + 1) * microbatches_per_rank]
        losses = forward_backward(chunks, mine, per_token_loss=per_token_loss)
        updated, norm = opt.step()
        assert updated, f"step {s} skipped with grad norm {norm}"
        if losses:
            expected = ref_losses[s][d * microbatches_per_rank:(d + 1) * microbatches_per_rank]
            out["loss"] = max(out["loss"], max(abs(a - b) for a, b in zip(losses, expected)))
            out["loss_rel"] = max(out["loss_rel"], max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, expected)))
            out["num_losses"] += len(losses)
        out["norm"] = max(out["norm"], abs(norm - ref_norms[s]))
    tp, tp_rank = state.get_tensor_parallel_world_size(), state.get_tensor_parallel_rank()
    from megasnow.parallel.tensor_parallel import shard_full_tensor

    for chunk in chunks:
        for name, p in chunk.module.named_parameters():
            ref_name = "embed.weight" if getattr(p, "shared_embedding", False) else name
            full = ref_weights[ref_name]
            dim = getattr(p, "tensor_parallel_dim", None)
            if dim is not None and tp > 1:
                full = shard_full_tensor(full, dim, p.tensor_parallel_partitions, tp_rank, tp)
            diff = float((p.detach().float() - full).abs().max())
            if diff >= out["weight"]:
                out["weight"], out["where"] = diff, name
    state.destroy_model_parallel()
    return out


# Spawned processes start slowly on a shared CPU, so every 2-rank check of the parallel tests runs in one
# spawn, once per pytest session; each test module reads its part of the results.
_TWO_RANK_RUN = {}


def two_rank_results(part):
    """Results of `part` ("pipeline", "data_parallel", "distributed_optimizer", "equivalence") per rank."""
    from megasnow.parallel.spawn import run_processes

    if "results" not in _TWO_RANK_RUN:
        try:
            _TWO_RANK_RUN["results"] = run_processes(_two_rank_suite, 2, timeout_s=400)
        except Exception as e:  # report the same failure to every module instead of re-running
            _TWO_RANK_RUN["results"] = e
    if isinstance(_TWO_RANK_RUN["results"], Exception):
        raise _TWO_RANK_RUN["results"]
    return [r[part] for r in _TWO_RANK_RUN["results"]]


def _two_rank_suite(rank, world):
    from tests.parallel import (
        test_data_parallel,
        test_distributed_optimizer,
        test_parallel_equivalence,
        test_pipeline,
    )

    return {"pipeline": test_pipeline.two_rank_checks(rank, world),
            "data_parallel": test_data_parallel.two_rank_checks(rank, world),
            "distributed_optimizer": test_distributed_optimizer.two_rank_checks(rank, world),
            "equivalence": test_parallel_equivalence.two_rank_checks(rank, world)}
