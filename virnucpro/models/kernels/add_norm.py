"""Residual add + layer norm in one pass over memory: ``x ← x + y``, ``h = LN(x)``.

ESM-2's packed fast path calls this twice per layer (after attention, after the feed-forward
block, the second time with the NEXT layer's norm). Done by PyTorch or inductor it costs a
reduction kernel that reads the 2,560-wide row twice (measured on an H200: 1.4 ms per 131k-token
call, ~1.9 TB/s, 7.7% of the layer time). The Triton kernel here keeps one whole row in registers:
``x`` and ``y`` are read once, ``x`` and ``h`` written once.

Semantics (the same as :func:`~virnucpro.models.fast.esm2.esm_attention_output`): the sum is
rounded to ``x``'s dtype and written back into ``x`` (in place); the norm is computed in fp32 on
that rounded sum (biased variance, as ``F.layer_norm``); ``h`` is returned in ``out_dtype``.
:func:`add_layer_norm_reference` is the same in plain PyTorch: the CPU path and the GPU tests'
reference. With the FP8 path (:func:`add_layer_norm_fp8`) the same pass writes ``h`` in e4m3 with
per-row scales (:mod:`~virnucpro.models.kernels.fp8_rows`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, MIN_SCALE, add_layer_norm_fp8_reference
from virnucpro.models.kernels.fp8_quantize import e4m3_row
from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = ["add_layer_norm", "add_layer_norm_fp8", "add_layer_norm_reference", "triton_add_norm_available"]


def add_layer_norm_reference(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    out_dtype: torch.dtype, *, store_sum: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x + y`` (in ``x``'s dtype, written into ``x`` unless ``store_sum`` is False: a post-LN
    layer only needs the norm) and its layer norm in ``out_dtype``."""
    total = (x + y).to(x.dtype)
    if store_sum:
        x.copy_(total)
    h = F.layer_norm(total.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
    return x, h.to(out_dtype)


def triton_add_norm_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


def _build() -> Any:
    import triton
    import triton.language as tl

    quantize_row = e4m3_row()

    @triton.jit
    def add_norm(x_ptr, y_ptr, w_ptr, b_ptr, h_ptr, s_ptr, n_cols, eps, fp8_max, min_scale,  # type: ignore[no-untyped-def]
                 BLOCK: tl.constexpr, STORE_SUM: tl.constexpr, QUANT: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        offsets = row * n_cols + cols
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        total = (x + y).to(x_ptr.dtype.element_ty)
        if STORE_SUM:
            tl.store(x_ptr + offsets, total, mask=mask)
        value = total.to(tl.float32)
        mean = tl.sum(value, axis=0) / n_cols
        centered = tl.where(mask, value - mean, 0.0)
        variance = tl.sum(centered * centered, axis=0) / n_cols
        rstd = 1.0 / tl.sqrt(variance + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        h = tl.where(mask, centered * rstd * w + b, 0.0)
        if QUANT:  # e4m3 rows with their scales (virnucpro.models.kernels.fp8_rows's rule)
            h, scale = quantize_row(h, fp8_max, min_scale)
            tl.store(s_ptr + row, scale)
        tl.store(h_ptr + offsets, h.to(h_ptr.dtype.element_ty), mask=mask)

    return add_norm


_KERNEL = TritonKernel("add+norm kernel", _build)


def add_layer_norm(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    out_dtype: torch.dtype, *, store_sum: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`add_layer_norm_reference`, one pass on CUDA (Triton) for contiguous ``[N, D]``."""
    if not _usable(x, y):
        return add_layer_norm_reference(x, y, weight, bias, eps, out_dtype, store_sum=store_sum)
    h = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if not _launch(x, y, weight, bias, eps, h, h, store_sum=store_sum, quant=False):
        return add_layer_norm_reference(x, y, weight, bias, eps, out_dtype, store_sum=store_sum)
    return x, h


def _usable(x: torch.Tensor, y: torch.Tensor) -> bool:
    return (
        x.is_cuda
        and x.dim() == 2
        and x.is_contiguous()
        and y.is_contiguous()
        and y.shape == x.shape
        and x.shape[0] > 0
        and _KERNEL.usable()
    )


def _launch(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
            h: torch.Tensor, scale: torch.Tensor, *, store_sum: bool, quant: bool) -> bool:
    import triton

    rows, cols = x.shape
    block = triton.next_power_of_2(cols)
    # 4 warps when quantising: 0.75 against 8 warps' 0.87 ms at 131,072 x 2,560 (bf16 residual; H200,
    # bench/probe_fp8.py); a bf16 output is as fast with either (0.64 / 0.66 ms)
    warps = (4 if quant else 8) if block >= 2048 else 4 if block >= 512 else 2
    return _KERNEL.launch((rows,), x, y, weight, bias, h, scale, cols, eps, E4M3_MAX, MIN_SCALE,
                          BLOCK=block, num_warps=warps, STORE_SUM=store_sum, QUANT=quant)


def add_layer_norm_fp8(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~virnucpro.models.kernels.fp8_rows.add_layer_norm_fp8_reference` in one pass on
    CUDA: ``x += y``, and ``h = LN(x)`` written straight in e4m3 with its row scales (the next
    FP8 GEMM reads 1 byte per element; no separate quantisation pass reads ``h`` again)."""
    if not _usable(x, y):
        return add_layer_norm_fp8_reference(x, y, weight, bias, eps)
    q = torch.empty(x.shape, dtype=E4M3, device=x.device)
    scale = torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device)
    if not _launch(x, y, weight, bias, eps, q, scale, store_sum=True, quant=True):
        return add_layer_norm_fp8_reference(x, y, weight, bias, eps)
    return x, q, scale
