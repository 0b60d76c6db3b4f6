"""A Llama-style decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP, tied or untied head.

Projections are column-/row-parallel layers (plain linears with one TP rank); the fused ops come from
megasnow.kernels with impl=cfg.kernels. A model can hold a slice of the layer stack for pipeline stages.
"""
import hashlib
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from megasnow.kernels import apply_rope, attention, linear_cross_entropy, rms_norm, rope_cos_sin, swiglu
from megasnow.model.config import ModelConfig, ModelConfigError
from megasnow.model.kv_cache import inference_attention_mask, masked_attention
from megasnow.parallel import state
from megasnow.parallel.tensor_parallel.cross_entropy import vocab_parallel_cross_entropy
from megasnow.parallel.tensor_parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    column_parallel_linear,
    copy_full_into_,
    mark_sequence_parallel,
)

# Output projections feed the residual stream; their init is scaled down by sqrt(2 * num_layers).
SCALED_INIT_SUFFIXES = ("o_proj.weight", "down_proj.weight")


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, impl, sequence_parallel=False, device=None, dtype=None):
        super().__init__()
        self.eps, self.impl = eps, impl
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        if sequence_parallel:
            mark_sequence_parallel(self.weight)  # sees only this rank's tokens: grads summed over TP

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps, impl=self.impl)


class Attention(nn.Module):
    """Causal self-attention with RoPE; num_kv_heads < num_heads gives grouped-query attention."""

    def __init__(self, cfg: ModelConfig, layer_id, sequence_parallel=False, device=None, dtype=None):
        super().__init__()
        tp = state.get_tensor_parallel_world_size()
        self.layer_id, self.impl = layer_id, cfg.kernels
        self.head_dim = cfg.head_dim
        self.local_heads, self.local_kv_heads = cfg.num_heads // tp, cfg.num_kv_heads // tp
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        # One fused projection; `partitions` gives every TP rank its own q, k and v heads.
        self.qkv_proj = ColumnParallelLinear(cfg.hidden_size, q_size + 2 * kv_size, partitions=(q_size, kv_size, kv_size),
                                             sequence_parallel=sequence_parallel, device=device, dtype=dtype)
        self.o_proj = RowParallelLinear(q_size, cfg.hidden_size, input_is_parallel=True,
                                        sequence_parallel=sequence_parallel, device=device, dtype=dtype)
        self.checkpoint_core = cfg.activation_checkpointing == "selective"

    def forward(self, x, cos, sin, document_ids=None, attn_mask=None, kv_cache=None):
        qkv = self.qkv_proj(x)  # [B, S, (Hq + 2 Hk) * D] for this rank's heads
        batch, seq_len = qkv.shape[:2]
        d = self.head_dim
        q, k, v = qkv.split([self.local_heads * d, self.local_kv_heads * d, self.local_kv_heads * d], dim=-1)
        q = q.reshape(batch, seq_len, self.local_heads, d)
        k = k.reshape(batch, seq_len, self.local_kv_heads, d)
        v = v.reshape(batch, seq_len, self.local_kv_heads, d)
        q, k = apply_rope(q, k, cos, sin, impl=self.impl)
        if attn_mask is not None:  # inference: padding-aware mask, optionally over cached keys
            if kv_cache is not None:
                k, v = kv_cache.update(self.layer_id, k, v)
            y = masked_attention(q, k, v, attn_mask)
        elif self.checkpoint_core and torch.is_grad_enabled():
            # Selective checkpointing: keep the projections' activations, recompute only the attention core.
            y = checkpoint(attention, q, k, v, True, document_ids, self.impl, use_reentrant=False)
        else:
            y = attention(q, k, v, causal=True, document_ids=document_ids, impl=self.impl)
        return self.o_proj(y.reshape(batch, seq_len, self.local_heads * d))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), gate and up fused into one column-parallel matmul."""

    def __init__(self, cfg: ModelConfig, sequence_parallel=False, device=None, dtype=None):
        super().__init__()
        self.impl = cfg.kernels
        f = cfg.ffn_hidden_size
        self.gate_up_proj = ColumnParallelLinear(cfg.hidden_size, 2 * f, partitions=(f, f),
                                                 sequence_parallel=sequence_parallel, device=device, dtype=dtype)
        self.down_proj = RowParallelLinear(f, cfg.hidden_size, input_is_parallel=True,
                                           sequence_parallel=sequence_parallel, device=device, dtype=dtype)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(swiglu(gate, up, impl=self.impl))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, layer_id, sequence_parallel=False, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, cfg.kernels, sequence_parallel, **kw)
        self.attn = Attention(cfg, layer_id, sequence_parallel, **kw)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, cfg.kernels, sequence_parallel, **kw)
        self.mlp = MLP(cfg, sequence_parallel, **kw)

    def forward(self, x, cos, sin, document_ids=None, attn_mask=None, kv_cache=None):
        x = x + self.attn(self.input_norm(x), cos, sin, document_ids, attn_mask, kv_cache)
        return x + self.mlp(self.post_attn_norm(x))


class LlamaModel(nn.Module):
    """The decoder, or one pipeline stage of it.

    pre_process: this chunk embeds tokens (first stage); post_process: it applies the final norm and head and
    returns logits or the loss (last stage); layer_ids: the global ids of the layers it holds (default all).
    Layers live in `self.layers[str(global_id)]` so parameter names are the same however the stack is split.
    `sequence_parallel` defaults to cfg.sequence_parallel. `init_seed=None` leaves weights uninitialized
    (call `init_weights(seed)` or load a checkpoint).
    """

    def __init__(self, cfg: ModelConfig, pre_process=True, post_process=True, layer_ids=None, *,
                 sequence_parallel=None, init_seed=0, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        self.pre_process, self.post_process = pre_process, post_process
        self.sequence_parallel = cfg.sequence_parallel if sequence_parallel is None else sequence_parallel
        self.tp_size = state.get_tensor_parallel_world_size()
        cfg.validate_parallel(self.tp_size, self.sequence_parallel)
        layer_ids = list(range(cfg.num_layers)) if layer_ids is None else [int(i) for i in layer_ids]
        bad = [i for i in layer_ids if not 0 <= i < cfg.num_layers]
        if bad or len(set(layer_ids)) != len(layer_ids) or layer_ids != sorted(layer_ids):
            raise ModelConfigError(f"layer_ids {layer_ids} must be distinct, increasing and in [0, {cfg.num_layers})")
        self.layer_ids = layer_ids
        kw = dict(device=device, dtype=dtype)
        sp = self.sequence_parallel

        # A last stage with tied embeddings holds its own copy of the embedding (same name, same init); the
        # pipeline code marks it `shared_embedding` and sums its gradient with the first stage's.
        needs_embedding = pre_process or (post_process and cfg.tie_embeddings)
        self.embed = VocabParallelEmbedding(cfg.padded_vocab_size, cfg.hidden_size, sp, **kw) if needs_embedding else None
        self.layers = nn.ModuleDict({str(i): DecoderLayer(cfg, i, sp, **kw) for i in layer_ids})
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, cfg.kernels, sp, **kw) if post_process else None
        self.lm_head = None
        if post_process and not cfg.tie_embeddings:
            self.lm_head = ColumnParallelLinear(cfg.hidden_size, cfg.padded_vocab_size, sequence_parallel=sp, **kw)
        self.input_tensor = None
        self._rope_cache = {}
        if init_seed is not None:
            self.init_weights(init_seed)

    # ----------------------------------------------------------------------------------------- weights
    @torch.no_grad()
    def init_weights(self, seed):
        """Scaled-normal init, identical for every TP size and pipeline split.

        Each parameter's full (unsharded) tensor is drawn on the CPU from generators seeded by
        (seed, parameter name); this rank keeps its slice. Norms start at 1.
        """
        std, scaled = self.cfg.init_std, self.cfg.init_std / (2.0 * self.cfg.num_layers) ** 0.5
        for name, param in self.named_parameters():
            shape = getattr(param, "full_shape", tuple(param.shape))
            if name.endswith("norm.weight"):
                full = torch.ones(shape)
            else:
                sigma = scaled if name.endswith(SCALED_INIT_SUFFIXES) else std
                full = seeded_normal(shape, sigma, seed, name)
            copy_full_into_(param, full)

    def head_weight(self):
        """The output projection's weight shard [padded_vocab / tp, H] (the embedding's when tied)."""
        return self.embed.weight if self.cfg.tie_embeddings else self.lm_head.weight

    def shared_embedding_weight(self):
        """The tied embedding weight on this chunk (first or last stage), else None: its gradient must be
        summed over the embedding group when the first and last stages differ."""
        return self.embed.weight if self.cfg.tie_embeddings and self.embed is not None else None

    # ----------------------------------------------------------------------------------------- forward
    def set_input_tensor(self, tensor):
        """Hidden states [B, S(/tp under sequence parallelism), H] from the previous pipeline stage."""
        if isinstance(tensor, (list, tuple)):
            tensor = tensor[0]
        self.input_tensor = tensor

    def rope(self, seq_len, device, positions=None):
        if positions is not None:
            return rope_cos_sin(seq_len, self.cfg.head_dim, self.cfg.rope_base, device=device, positions=positions)
        key = (seq_len, str(device))
        if key not in self._rope_cache:
            self._rope_cache = {key: rope_cos_sin(seq_len, self.cfg.head_dim, self.cfg.rope_base, device=device)}
        return self._rope_cache[key]

    def forward(self, tokens=None, labels=None, document_ids=None):
        """tokens [B, S] -> logits [B, S, vocab] (labels None) or the mean loss over labels != -100.

        On a non-last pipeline stage returns hidden states; on a non-first stage the input comes from
        set_input_tensor. document_ids [B, S] keeps attention inside packed documents.
        """
        h = self._embed_or_input(tokens)
        seq_len = h.shape[1] * (self.tp_size if self.sequence_parallel else 1)
        if seq_len > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds model.max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope(seq_len, h.device)
        full_checkpoint = self.cfg.activation_checkpointing == "full" and torch.is_grad_enabled()
        for layer in self.layers.values():
            if full_checkpoint:
                h = checkpoint(layer, h, cos, sin, document_ids, use_reentrant=False)
            else:
                h = layer(h, cos, sin, document_ids)
        if not self.post_process:
            return h
        h = self.norm(h)
        return self.logits(h) if labels is None else self.loss(h, labels)

    def _embed_or_input(self, tokens):
        if self.pre_process:
            if tokens is None:
                raise ValueError("the first pipeline stage needs tokens")
            return self.embed(tokens)
        if self.input_tensor is None:
            raise ValueError("a non-first pipeline stage needs set_input_tensor(hidden) before forward")
        return self.input_tensor

    def logits(self, h):
        """Full-vocabulary logits [B, S, vocab_size] (gathered over TP and sequence shards; padding cut)."""
        logits = column_parallel_linear(h, self.head_weight(), sequence_parallel=self.sequence_parallel,
                                        gather_output=True)
        return logits[..., :self.cfg.vocab_size]

    def loss(self, h, labels):
        """Mean cross entropy over labels != -100; padded vocabulary rows never enter the softmax."""
        weight, vocab = self.head_weight(), self.cfg.vocab_size
        if self.tp_size == 1:
            # Fused head + loss, chunked over tokens so the full logits never exist at once.
            return linear_cross_entropy(h.reshape(-1, h.shape[-1]), weight[:vocab], labels.reshape(-1),
                                        impl=self.cfg.kernels)
        shard_rows = weight.shape[0]
        vocab_start = state.get_tensor_parallel_rank() * shard_rows
        valid_rows = min(shard_rows, vocab - vocab_start)  # only the last shard holds padding rows
        logits = column_parallel_linear(h, weight[:valid_rows], sequence_parallel=self.sequence_parallel)
        return vocab_parallel_cross_entropy(logits.reshape(-1, valid_rows), labels.reshape(-1), vocab_start,
                                            impl=self.cfg.kernels)

    # ----------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def forward_inference(self, tokens, positions, valid, kv_cache=None):
        """Logits [B, T, vocab] for new tokens [B, T] at positions [B, T] (per sequence, left padding allowed).

        valid [B, T] marks real tokens (padding is never attended to). With a KVCache the tokens are
        appended to the cache and attend to everything cached before them; without one, T is the whole
        sequence. Needs the whole model on this rank (no pipeline split) and no sequence parallelism.
        """
        if not (self.pre_process and self.post_process) or self.sequence_parallel:
            raise ValueError("inference needs a single-stage model without sequence parallelism")
        cos, sin = self.rope(tokens.shape[1], tokens.device, positions=positions)
        if kv_cache is not None:
            kv_cache.begin(valid)
            mask = kv_cache.mask
        else:
            mask = inference_attention_mask(valid, 0, tokens.shape[1])
        h = self.embed(tokens)
        for layer in self.layers.values():
            h = layer(h, cos, sin, attn_mask=mask, kv_cache=kv_cache)
        if kv_cache is not None:
            kv_cache.end()
        return self.logits(self.norm(h))

    def new_kv_cache(self, batch_size, max_len, device=None, dtype=None):
        from megasnow.model.kv_cache import KVCache

        p = self.embed.weight
        return KVCache(batch_size, max_len, self.cfg.num_kv_heads // self.tp_size, self.cfg.head_dim,
                       self.layer_ids, device or p.device, dtype or p.dtype)


INIT_BLOCK = 1 << 22  # elements drawn per generator; blocks are filled in parallel threads


def seeded_normal(shape, std, seed, name):
    """A CPU fp32 tensor of Normal(0, std) that depends only on (shape, std, seed, name).

    Block i of the flattened tensor comes from its own generator seeded by (seed, name, i), so big
    tensors (the 64k x 2048 embedding) fill on all CPU threads yet stay identical on every machine.
    """
    out = torch.empty(shape)
    flat = out.view(-1)
    starts = range(0, flat.numel(), INIT_BLOCK)

    def fill(start):
        gen = torch.Generator().manual_seed(parameter_seed(seed, f"{name}#{start // INIT_BLOCK}"))
        flat[start:start + INIT_BLOCK].normal_(0.0, std, generator=gen)

    if len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(len(starts), torch.get_num_threads())) as pool:
            list(pool.map(fill, starts))
    else:
        for start in starts:
            fill(start)
    return out


def parameter_seed(seed, name):
    """A 63-bit seed from (seed, parameter name), stable across processes and Python versions."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def document_ids_from_tokens(tokens, eod_id):
    """Document index of every position of packed sequences [B, S]: an EOD token ends its document.

    Pass the result as `document_ids` to keep attention inside documents (model.document_mask).
    """
    is_eod = (tokens == eod_id).long()
    return torch.cumsum(is_eod, dim=1) - is_eod  # the EOD itself belongs to the document it closes
