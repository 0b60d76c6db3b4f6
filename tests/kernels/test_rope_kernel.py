"""RoPE Triton kernel (interpreter on CPU) against the reference and HF Llama's rotate_half convention."""

import pytest
import torch

from megasnow.kernels import apply_rope, rope_cos_sin
from megasnow.kernels.rope import apply_rope_reference
from tests.kernels.helpers import assert_same_function


def _rope(impl):
    return lambda q, k, cos, sin: apply_rope(q, k, cos, sin, impl=impl)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_q_heads,n_k_heads,head_dim", [(4, 2, 16), (3, 1, 12)])  # GQA; odd head count
def test_rope_triton_matches_reference(dtype, n_q_heads, n_k_heads, head_dim, poisoned_allocations):
    q = torch.randn(2, 5, n_q_heads, head_dim, dtype=dtype)
    k = torch.randn(2, 5, n_k_heads, head_dim, dtype=dtype)
    cos, sin = rope_cos_sin(5, head_dim)
    assert_same_function(_rope("triton"), _rope("reference"), [q, k, cos, sin], dtype, f"rope {dtype}", n_grad=2)


def test_rope_per_sample_positions_and_strided_inputs(poisoned_allocations):
    # q/k as views into a fused qkv projection (non-contiguous heads), positions restarting per document.
    qkv = torch.randn(2, 6, 4 + 2 + 2, 8)
    q, k = qkv[:, :, :4], qkv[:, :, 4:6]
    positions = torch.tensor([[0, 1, 2, 0, 1, 2], [5, 6, 7, 8, 9, 10]])
    cos, sin = rope_cos_sin(6, 8, positions=positions)
    assert cos.shape == (2, 6, 4)
    assert_same_function(_rope("triton"), _rope("reference"), [q, k, cos, sin], torch.float32, "rope positions", n_grad=2)
    for ours, ref in zip(apply_rope(q, k, cos, sin, impl="triton"), apply_rope_reference(q, k, cos, sin)):
        torch.testing.assert_close(ours, ref)  # the strided views themselves (the helper clones them)
    # position p in row 0 rotates exactly like position p of a plain [S, D/2] table
    cos_plain, sin_plain = rope_cos_sin(3, 8)
    q_docs, _ = apply_rope(q[:1, 3:], k[:1, 3:], cos_plain, sin_plain, impl="triton")
    q_rot, _ = apply_rope(q, k, cos, sin, impl="triton")
    torch.testing.assert_close(q_rot[:1, 3:], q_docs)


def test_rope_matches_hf_llama_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k = torch.randn(2, 7, 4, 16), torch.randn(2, 7, 2, 16)
    cos, sin = rope_cos_sin(7, 16, base=500000.0)
    hf_q, hf_k = apply_rotary_pos_emb(
        q.transpose(1, 2), k.transpose(1, 2), torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]
    )
    ours_q, ours_k = apply_rope(q, k, cos, sin, impl="triton")
    torch.testing.assert_close(ours_q, hf_q.transpose(1, 2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_k, hf_k.transpose(1, 2), rtol=1e-6, atol=1e-6)


def test_rope_preserves_norms_and_relative_positions():
    # rotation: per-pair norms unchanged; <rot(q, m), rot(k, n)> depends only on m - n
    cos, sin = rope_cos_sin(8, 16)
    q = torch.randn(1, 1, 1, 16).expand(1, 8, 1, 16)
    k = torch.randn(1, 1, 1, 16).expand(1, 8, 1, 16)
    rq, rk = apply_rope_reference(q, k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    dots = (rq[0, :, 0, None, :] * rk[0, None, :, 0, :]).sum(-1)  # [m, n]
    torch.testing.assert_close(dots[3, 1], dots[7, 5], rtol=1e-5, atol=1e-5)


def test_rope_cos_sin_values_and_errors():
    cos, sin = rope_cos_sin(4, 8, base=10000.0)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    torch.testing.assert_close(cos[3], torch.cos(3 * inv_freq))
    assert cos.dtype == torch.float32 and cos.shape == (4, 4)
    with pytest.raises(ValueError, match="even"):
        rope_cos_sin(4, 7)
    with pytest.raises(ValueError, match="cos/sin"):
        apply_rope(torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), *rope_cos_sin(5, 8))
