"""Causal self-attention with grouped-query heads and optional packed-document masking.

Dispatches to flash-attn when it is importable and the tensors are on CUDA (its varlen kernel for
packed documents), else to PyTorch's scaled_dot_product_attention; the reference is plain fp32
softmax(QK^T / sqrt(D)) V with the same masks.
"""

import functools
import math

import torch
import torch.nn.functional as F

ATTENTION_IMPLS = ("auto", "triton", "flash", "sdpa", "reference")


@functools.lru_cache(maxsize=None)
def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build
        return False
    return True


def _check_shapes(q, k, v, document_ids):
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1]:
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must be "
                         "[B, S, Hq, D] and [B, S, Hk, D]")
    if q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(f"attention: head dims differ or Hq={q.shape[2]} is not a multiple of Hk={k.shape[2]}")
    if document_ids is not None and tuple(document_ids.shape) != tuple(q.shape[:2]):
        raise ValueError(f"attention: document_ids {tuple(document_ids.shape)} must be [B, S] = {tuple(q.shape[:2])}")


def attention_mask(seq_len: int, causal: bool, document_ids=None, device=None):
    """Boolean "may attend" mask: [S, S] (causal only), [B, 1, S, S] with documents, or None (no mask)."""
    mask = None
    if causal:
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    if document_ids is not None:
        same_doc = (document_ids[:, :, None] == document_ids[:, None, :])[:, None]
        mask = same_doc if mask is None else same_doc & mask
    return mask


def attention_reference(q, k, v, causal: bool = True, document_ids=None):
    """fp32 softmax(Q K^T / sqrt(D)) V with K/V heads repeated for GQA; output in q's dtype."""
    _check_shapes(q, k, v, document_ids)
    groups = q.shape[2] // k.shape[2]
    qf = q.float().transpose(1, 2)
    kf = k.float().repeat_interleave(groups, dim=2).transpose(1, 2)
    vf = v.float().repeat_interleave(groups, dim=2).transpose(1, 2)
    scores = qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = attention_mask(q.shape[1], causal, document_ids, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ vf).transpose(1, 2).to(q.dtype)


def _sdpa_attention(q, k, v, causal, document_ids):
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = k.shape[2] != q.shape[2]
    if document_ids is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=gqa)
    else:
        mask = attention_mask(q.shape[1], causal, document_ids, q.device)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=gqa)
    return out.transpose(1, 2)


def document_cu_seqlens(document_ids: torch.Tensor):
    """Cumulative segment lengths (int32 [n_segments + 1]) and the longest segment, for flash-attn varlen.

    A segment is a maximal run of equal document ids inside one row; rows never share a segment.
    """
    batch, seq_len = document_ids.shape
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start_positions = torch.nonzero(starts.flatten()).squeeze(1)
    total = torch.tensor([batch * seq_len], device=document_ids.device)
    cu_seqlens = torch.cat([start_positions, total]).to(torch.int32)
    max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max().item())
    return cu_seqlens, max_seqlen


def _flash_attention(q, k, v, causal, document_ids):
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if document_ids is None:
        return flash_attn_func(q, k, v, causal=causal)
    batch, seq_len = q.shape[:2]
    cu_seqlens, max_seqlen = document_cu_seqlens(document_ids)
    out = flash_attn_varlen_func(
        q.reshape(batch * seq_len, *q.shape[2:]), k.reshape(batch * seq_len, *k.shape[2:]),
        v.reshape(batch * seq_len, *v.shape[2:]), cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=causal,
    )
    return out.view(q.shape)


def resolve_attention_impl(impl: str, q: torch.Tensor) -> str:
    """"flash" | "sdpa" | "reference". "auto" and "triton" (the model-wide kernel setting) both mean the
    fastest available: flash-attn for fp16/bf16 CUDA tensors when installed, else SDPA."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    if impl in ("auto", "triton"):
        usable = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_attn_available()
        return "flash" if usable else "sdpa"
    if impl == "flash" and not (q.is_cuda and flash_attn_available()):
        raise RuntimeError("attention impl='flash' needs flash-attn installed and CUDA tensors")
    return impl


def attention(q, k, v, causal: bool = True, document_ids=None, impl: str = "auto"):
    """Attention of q [B, S, Hq, D] over k, v [B, S, Hk, D] (GQA when Hk < Hq) -> [B, S, Hq, D].

    document_ids [B, S] (int) keeps each token's attention inside its own document of a packed sequence.
    """
    _check_shapes(q, k, v, document_ids)
    resolved = resolve_attention_impl(impl, q)
    if resolved == "reference":
        return attention_reference(q, k, v, causal, document_ids)
    if resolved == "flash":
        return _flash_attention(q, k, v, causal, document_ids)
    return _sdpa_attention(q, k, v, causal, document_ids)
