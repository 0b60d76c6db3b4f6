"""Rotary position embedding on query and key, HF-Llama "rotate_half" convention, Triton forward/backward.

Dimension i of the first half of each head pairs with dimension i + D/2; cos/sin are [S, D/2] (or
[B, S, D/2] for per-sample positions) fp32. The backward is the same rotation by -theta.
"""

import torch

from megasnow.kernels._triton import kernel_for, resolve_impl, tl, triton


@triton.jit
def _rope_kernel(
    Q_OUT, K_OUT, Q, K, COS, SIN,
    q_stride_b, q_stride_s, q_stride_h, k_stride_b, k_stride_s, k_stride_h,
    qo_stride_b, qo_stride_s, qo_stride_h, ko_stride_b, ko_stride_s, ko_stride_h,
    cos_stride_b, cos_stride_s, seq_len, n_q_heads, n_k_heads, half_dim,
    BACKWARD: tl.constexpr, BLOCK_QH: tl.constexpr, BLOCK_KH: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per (batch, position): rotates all q heads and all k heads of that token.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // seq_len
    s = pid % seq_len
    d = tl.arange(0, BLOCK_D)
    d_mask = d < half_dim
    cos = tl.load(COS + b * cos_stride_b + s * cos_stride_s + d, mask=d_mask, other=0.0)
    sin = tl.load(SIN + b * cos_stride_b + s * cos_stride_s + d, mask=d_mask, other=0.0)
    if BACKWARD:
        sin = -sin
    cos = cos[None, :]
    sin = sin[None, :]

    # out1 = x1*cos - x2*sin ; out2 = x2*cos + x1*sin
    qh = tl.arange(0, BLOCK_QH)
    q_mask = (qh[:, None] < n_q_heads) & d_mask[None, :]
    q_in = Q + b * q_stride_b + s * q_stride_s + qh[:, None] * q_stride_h + d[None, :]
    q_out = Q_OUT + b * qo_stride_b + s * qo_stride_s + qh[:, None] * qo_stride_h + d[None, :]
    q1 = tl.load(q_in, mask=q_mask, other=0.0).to(tl.float32)
    q2 = tl.load(q_in + half_dim, mask=q_mask, other=0.0).to(tl.float32)
    tl.store(q_out, (q1 * cos - q2 * sin).to(Q_OUT.dtype.element_ty), mask=q_mask)
    tl.store(q_out + half_dim, (q2 * cos + q1 * sin).to(Q_OUT.dtype.element_ty), mask=q_mask)

    kh = tl.arange(0, BLOCK_KH)
    k_mask = (kh[:, None] < n_k_heads) & d_mask[None, :]
    k_in = K + b * k_stride_b + s * k_stride_s + kh[:, None] * k_stride_h + d[None, :]
    k_out = K_OUT + b * ko_stride_b + s * ko_stride_s + kh[:, None] * ko_stride_h + d[None, :]
    k1 = tl.load(k_in, mask=k_mask, other=0.0).to(tl.float32)
    k2 = tl.load(k_in + half_dim, mask=k_mask, other=0.0).to(tl.float32)
    tl.store(k_out, (k1 * cos - k2 * sin).to(K_OUT.dtype.element_ty), mask=k_mask)
    tl.store(k_out + half_dim, (k2 * cos + k1 * sin).to(K_OUT.dtype.element_ty), mask=k_mask)


def rope_cos_sin(seq_len: int, head_dim: int, base: float = 10000.0, device=None, positions=None):
    """cos, sin fp32 of shape [seq_len, head_dim // 2] (or positions.shape + [head_dim // 2]).

    positions (int tensor [S] or [B, S]) gives explicit positions, e.g. restarting at each packed
    document; default arange(seq_len). Frequencies follow HF Llama: base ** (-2i / head_dim).
    """
    if head_dim % 2:
        raise ValueError(f"rope_cos_sin: head_dim must be even, got {head_dim}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    if positions is None:
        positions = torch.arange(seq_len, device=device)
    elif positions.shape[-1] != seq_len:
        raise ValueError(f"rope_cos_sin: positions last dim {positions.shape[-1]} != seq_len {seq_len}")
    freqs = positions.to(device=inv_freq.device, dtype=torch.float32)[..., None] * inv_freq
    return freqs.cos(), freqs.sin()


def _rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x32 = x.float()
    x1, x2 = x32[..., :half], x32[..., half:]
    if cos.dim() == 2:  # [S, D/2] -> broadcast over batch and heads
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:  # [B, S, D/2]
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def apply_rope_reference(q, k, cos, sin):
    """Pure-torch RoPE with the kernel's numerics (fp32 rotation, one cast)."""
    return _rotate_reference(q, cos, sin), _rotate_reference(k, cos, sin)


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def rope_forward(q, k, cos, sin, backward: bool = False):
    """Rotate q [B, S, Hq, D] and k [B, S, Hk, D] by theta (or -theta when backward) into new tensors."""
    q, k = _last_dim_contiguous(q), _last_dim_contiguous(k)
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    batch, seq_len, n_q_heads, head_dim = q.shape
    n_k_heads = k.shape[2]
    half = head_dim // 2
    q_out, k_out = torch.empty_like(q, memory_format=torch.contiguous_format), torch.empty_like(
        k, memory_format=torch.contiguous_format
    )
    cos_stride_b = cos.stride(0) if cos.dim() == 3 else 0
    cos_stride_s = cos.stride(-2)
    block_qh, block_kh = triton.next_power_of_2(n_q_heads), triton.next_power_of_2(n_k_heads)
    block_d = triton.next_power_of_2(half)
    num_warps = 8 if block_qh * block_d >= 2048 else 4
    kernel_for(_rope_kernel, q.device)[(batch * seq_len,)](
        q_out, k_out, q, k, cos, sin,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2), k_out.stride(0), k_out.stride(1), k_out.stride(2),
        cos_stride_b, cos_stride_s, seq_len, n_q_heads, n_k_heads, half,
        BACKWARD=backward, BLOCK_QH=block_qh, BLOCK_KH=block_kh, BLOCK_D=block_d, num_warps=num_warps,
    )
    return q_out, k_out


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rope_forward(q, k, cos, sin)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq_in, dk_in = rope_forward(dq, dk, cos, sin, backward=True)
        return dq_in, dk_in, None, None


def _check_rope_shapes(q, k, cos, sin):
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"apply_rope: q {tuple(q.shape)} and k {tuple(k.shape)} must be [B, S, H, D] alike")
    batch, seq_len, _, head_dim = q.shape
    if head_dim % 2:
        raise ValueError(f"apply_rope: head_dim must be even, got {head_dim}")
    ok = (cos.shape == sin.shape) and (
        tuple(cos.shape) == (seq_len, head_dim // 2) or tuple(cos.shape) == (batch, seq_len, head_dim // 2)
    )
    if not ok:
        raise ValueError(
            f"apply_rope: cos/sin {tuple(cos.shape)} must be [S, D/2] = [{seq_len}, {head_dim // 2}] or [B, S, D/2]"
        )


def apply_rope(q, k, cos, sin, impl: str = "auto"):
    """Rotate q [B, S, Hq, D] and k [B, S, Hk, D] with cos/sin [S, D/2] or [B, S, D/2]; returns (q, k)."""
    _check_rope_shapes(q, k, cos, sin)
    if resolve_impl(impl, q.device) == "reference":
        return apply_rope_reference(q, k, cos, sin)
    return RoPEFunction.apply(q, k, cos, sin)
