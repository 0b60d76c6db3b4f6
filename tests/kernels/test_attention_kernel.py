"""Attention dispatch (SDPA on CPU) against the fp32 reference: causal, GQA, packed-document masks,
gradients, and the cu_seqlens the flash-attn varlen path uses."""

import pytest
import torch

from megasnow.kernels import attention
from megasnow.kernels.attention import attention_reference, document_cu_seqlens
from tests.kernels.helpers import assert_same_function

DOCS = torch.tensor([[0, 0, 0, 1, 1, 2, 2], [4, 4, 9, 9, 9, 9, 9]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal,document_ids", [(True, None), (True, DOCS), (False, DOCS)])
def test_attention_matches_reference_with_gqa(dtype, causal, document_ids):
    q = torch.randn(2, 7, 4, 8, dtype=dtype)
    k, v = torch.randn(2, 7, 2, 8, dtype=dtype), torch.randn(2, 7, 2, 8, dtype=dtype)
    assert_same_function(
        lambda a, b, c: attention(a, b, c, causal=causal, document_ids=document_ids),
        lambda a, b, c: attention_reference(a, b, c, causal=causal, document_ids=document_ids),
        [q, k, v], dtype, f"attention {dtype} causal={causal} docs={document_ids is not None}",
    )


def test_document_mask_equals_attending_each_document_alone():
    q, k, v = torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8)
    packed = attention(q, k, v, causal=True, document_ids=DOCS)
    # the varlen layout flash-attn gets: segments of the flattened [B*S] tokens
    cu_seqlens, max_seqlen = document_cu_seqlens(DOCS)
    assert cu_seqlens.tolist() == [0, 3, 5, 7, 9, 14] and cu_seqlens.dtype == torch.int32 and max_seqlen == 5
    flat = lambda t: t.reshape(14, *t.shape[2:])  # noqa: E731
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        alone = attention_reference(*(flat(t)[None, start:end] for t in (q, k, v)), causal=True)
        torch.testing.assert_close(flat(packed)[start:end], alone[0], rtol=1e-5, atol=1e-5)


def test_attention_reference_is_causal_softmax():
    q, k, v = torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)
    out = attention_reference(q, k, v)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])  # first token sees only itself
    w = torch.softmax(q[0, 2, 0] @ k[0, :, 0].T / 2.0, -1)
    torch.testing.assert_close(out[0, 2, 0], w @ v[0, :, 0])


def test_attention_errors():
    q = torch.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8))
    with pytest.raises(ValueError, match="document_ids"):
        attention(q, q, q, document_ids=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(RuntimeError, match="flash-attn"):
        attention(q, q, q, impl="flash")
