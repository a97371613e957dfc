"""Per-row FP8 (e4m3) quantisation, and residual + layer norm + quantisation in one pass.

The rule (one place): a row's scale is ``max(|row|) / 448`` (e4m3's largest finite value), at
least ``1e-12`` (an all-zero row); its values are ``row / scale`` cast to e4m3.

:func:`add_layer_norm_fp8` is ESM-2's ``x += y; h = layer_norm(x)`` with ``h`` written straight in
e4m3 with its row scales, so the next FP8 GEMM reads 1 byte per element and no separate
quantisation pass reads ``h`` again (issue 17: a separate bf16→fp8 cast of one fc1-sized
activation cost half that GEMM's FP8 time). The whole row is in one Triton program, so the row's
max is known before anything is stored. Without Triton or CUDA the same result comes from
:func:`add_layer_norm_fp8_reference`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = [
    "E4M3",
    "E4M3_MAX",
    "MIN_SCALE",
    "row_scale",
    "quantize_rows",
    "add_layer_norm_fp8",
    "add_layer_norm_fp8_reference",
    "triton_add_norm_fp8_available",
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


def triton_add_norm_fp8_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def add_norm_fp8(x_ptr, y_ptr, w_ptr, b_ptr, q_ptr, s_ptr, n_cols, eps,  # type: ignore[no-untyped-def]
                     fp8_max, min_scale, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        offsets = row * n_cols + cols
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        total = (x + y).to(x_ptr.dtype.element_ty)
        tl.store(x_ptr + offsets, total, mask=mask)
        value = total.to(tl.float32)
        mean = tl.sum(value, axis=0) / n_cols
        centered = tl.where(mask, value - mean, 0.0)
        variance = tl.sum(centered * centered, axis=0) / n_cols
        rstd = 1.0 / tl.sqrt(variance + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        h = tl.where(mask, centered * rstd * w + b, 0.0)
        scale = tl.maximum(tl.max(tl.abs(h), axis=0) / fp8_max, min_scale)
        q = tl.minimum(tl.maximum(h / scale, -fp8_max), fp8_max)
        tl.store(q_ptr + offsets, q.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + row, scale)

    return add_norm_fp8


_KERNEL = TritonKernel("add+norm+fp8 kernel", _build)


def add_layer_norm_fp8(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`add_layer_norm_fp8_reference`, one pass on CUDA (Triton) for contiguous ``[N, D]``."""
    usable = (
        x.is_cuda and x.dim() == 2 and x.is_contiguous() and y.is_contiguous() and y.shape == x.shape
        and x.shape[0] > 0 and _KERNEL.usable()
    )
    if not usable:
        return add_layer_norm_fp8_reference(x, y, weight, bias, eps)
    import triton

    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=E4M3, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(cols)
    warps = 8 if block >= 2048 else 4 if block >= 512 else 2
    if not _KERNEL.launch((rows,), x, y, weight, bias, q, scale, cols, eps, E4M3_MAX, MIN_SCALE,
                          BLOCK=block, num_warps=warps):
        return add_layer_norm_fp8_reference(x, y, weight, bias, eps)
    return x, q, scale
