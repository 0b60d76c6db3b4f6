"""Fused kernels (Triton forward/backward + pure-torch references) for the megasnow model.

Every op takes impl="auto" | "triton" | "reference"; importing this package never needs CUDA.
"""

from megasnow.kernels._triton import HAS_TRITON, resolve_impl
from megasnow.kernels.attention import attention
from megasnow.kernels.cross_entropy import ce_partial_grad, ce_partial_stats, cross_entropy
from megasnow.kernels.linear_cross_entropy import linear_cross_entropy
from megasnow.kernels.rms_norm import rms_norm
from megasnow.kernels.rope import apply_rope, rope_cos_sin
from megasnow.kernels.swiglu import swiglu, swiglu_packed

__all__ = [
    "HAS_TRITON",
    "apply_rope",
    "attention",
    "ce_partial_grad",
    "ce_partial_stats",
    "cross_entropy",
    "linear_cross_entropy",
    "resolve_impl",
    "rms_norm",
    "rope_cos_sin",
    "swiglu",
    "swiglu_packed",
]
