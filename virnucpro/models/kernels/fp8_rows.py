"""Per-row FP8 (e4m3) quantisation: the rule, and residual + layer norm + quantisation in PyTorch.

The rule (one place): a row's scale is ``max(|row|) / 448`` (e4m3's largest finite value), at
least ``1e-12`` (an all-zero row); its values are ``row / scale`` cast to e4m3.

:func:`add_layer_norm_fp8_reference` is ESM-2's ``x += y; h = layer_norm(x)`` with ``h``
quantised: the CPU path and the GPU tests' reference of the Triton pass
:func:`~virnucpro.models.kernels.add_norm.add_layer_norm_fp8`, which writes ``h`` straight in e4m3
(the next FP8 GEMM reads 1 byte per element, and no separate quantisation pass reads ``h`` again:
issue 17 measured a separate bf16→fp8 cast of one fc1-sized activation at half that GEMM's FP8
time). The whole row is in one Triton program, so its max is known before anything is stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


__all__ = [
    "E4M3",
    "E4M3_MAX",
    "MIN_SCALE",
    "row_scale",
    "quantize_rows",
    "add_layer_norm_fp8_reference",
]

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
MIN_SCALE = 1e-12


def row_scale(x: torch.Tensor) -> torch.Tensor:
    """The e4m3 scale of each row of ``x [..., K]``: ``[..., 1]`` fp32."""
    return (x.abs().amax(dim=-1, keepdim=True).float() / E4M3_MAX).clamp(min=MIN_SCALE)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row e4m3 quantisation of ``x [N, K]``: (``q`` e4m3 ``[N, K]``, ``scale`` ``[N, 1]`` fp32)."""
    scale = row_scale(x)
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def add_layer_norm_fp8_reference(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x += y`` (in ``x``'s dtype) and its fp32 layer norm quantised per row: (x, q, scale)."""
    total = (x + y).to(x.dtype)
    x.copy_(total)
    h = F.layer_norm(total.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
    q, scale = quantize_rows(h)
    return x, q, scale
