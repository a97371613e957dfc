"""DNABERT-S attention with its ALiBi + padding bias, without a bias copy per layer.

SDPA's memory-efficient kernel (the one that takes an additive bias) needs the bias's row stride
to be a multiple of 16 elements; a ``[B, heads, T, T]`` bias with ``T`` not a multiple of 16 is
padded into a new tensor on EVERY call. Inside a compiled layer inductor inserts that pad itself,
whatever the input's strides: measured on an H200, 12 pads of ~0.3 ms for a 1,008 × 101-token
batch, 6% of the DNABERT-S forward.

So the bias is built once per batch in 16-aligned storage (:func:`aligned_bias`, a view of the
same values) and attention is a custom op (:func:`alibi_attention`) that inductor treats as an
opaque call: the view reaches SDPA as it is, and nothing is padded. The op is registered by
:func:`register_alibi_attention` (``FastDnabert`` calls it before its first compiled call), not at
import. It is exactly
``scaled_dot_product_attention(q, k, v, attn_mask=bias)``, returned as ``[B, T, heads, head]``
(the memory-efficient kernel's own layout, so no transpose copy either). Where the op cannot be
registered, the same SDPA call runs directly. Measured with the bf16 residual option on the same
batch: 57.6 → 51.8 ms per forward (``docs/benchmarks.md``, run E).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["BIAS_ALIGNMENT", "aligned_bias", "alibi_attention", "register_alibi_attention"]

logger = logging.getLogger(__name__)

BIAS_ALIGNMENT = 16
"""Elements; the memory-efficient attention kernel's alignment for the bias's strides."""

_OP_NAME = "virnucpro::alibi_attention"


def aligned_bias(bias: torch.Tensor) -> torch.Tensor:
    """``bias [B, heads, T, T]`` as a view into storage whose rows are 16-element aligned."""
    length = bias.shape[-1]
    padded = -(-length // BIAS_ALIGNMENT) * BIAS_ALIGNMENT
    if padded == length and bias.is_contiguous():
        return bias
    storage = bias.new_zeros((*bias.shape[:-1], padded))
    storage[..., :length] = bias
    return storage[..., :length]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``[B, heads, T, head]`` q/k/v and ``[B, heads, T, T]`` bias -> ``[B, T, heads, head]``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).contiguous()


def _attention_shape(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    batch, heads, length, head = q.shape
    return q.new_empty((batch, length, heads, head))


_op: Callable[..., torch.Tensor] | None = None


def register_alibi_attention() -> bool:
    """Register the custom op once per process (call before compiling; nothing at import).

    Returns whether the op is in use; if registration fails, the plain SDPA call (the same
    function, with inductor's per-layer bias pad) is used and a warning says why.
    """
    global _op
    if _op is None:
        try:
            op = torch.library.custom_op(_OP_NAME, mutates_args=())(_attention)
            op.register_fake(_attention_shape)
            _op = op
        except Exception as exc:  # an older or unusual torch: the plain call computes the same
            logger.warning(
                "cannot register %s (%s); DNABERT-S attention runs as plain SDPA", _OP_NAME, exc
            )
            _op = _attention
    return _op is not _attention


def alibi_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """``softmax(q·kᵀ/√d + bias)·v`` as ``[B, T, heads, head]`` (bias from :func:`aligned_bias`).

    Through the custom op once :func:`register_alibi_attention` ran, else plain SDPA.
    """
    return (_op or _attention)(q, k, v, bias)
