"""Per-row e4m3 quantisation of an activation in one pass over memory, fc1's GELU optionally first.

The FP8 ESM-2 path quantises two activations per layer that no norm kernel writes: the
attention output (2,560 wide, the out-projection's input) and fc1's output after its exact GELU
(10,240 wide, fc2's input). Compiled by inductor these were reduction kernels that read the row
twice: measured on an H200 (``bench/probe_fp8.py``, 131,072 tokens), the GELU one took 4.4-5.2 ms
per call, 18% of the FP8 layer's GPU time. Here one program holds a whole row in registers:
read once (bf16), written once (e4m3) with its scale (the same probe: 3.1 ms at 10,240 wide,
0.25 ms at 2,560 against inductor's 0.71; walking a wide row in chunks twice, to hold less at a
time, measured 3.4-3.9 ms, and two kernels, the scales then the values, 3.6 ms). Quantising inside fc1's GEMM epilogue, which would save writing and
reading fc1's bf16 output, is not built.

Numerics are :func:`~virnucpro.models.kernels.fp8_rows.quantize_rows`'s rule (one place): fp32
arithmetic, ``scale = max(amax / 448, 1e-12)``, values times the scale's reciprocal (within one
fp32 ulp of the division: IEEE division per element made the pass 2× slower, same probe),
clamped and rounded to e4m3 once; the GELU is the exact (erf) one in fp32, as
``F.gelu(y.float())``. Where the kernel cannot run (no CUDA, no Triton, a launch failed), the
PyTorch reference does.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, MIN_SCALE, quantize_rows
from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = ["e4m3_row", "quantize_rows_fused", "quantize_rows_reference", "triton_quantize_available"]


def quantize_rows_reference(x: torch.Tensor, *, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows(gelu(x))`` (or of ``x``) in PyTorch, fp32: (e4m3 ``[N, K]``, scale ``[N, 1]``)."""
    return quantize_rows(F.gelu(x.float()) if gelu else x)


def triton_quantize_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


@functools.cache
def e4m3_row() -> Any:
    """The e4m3 row rule as a ``@triton.jit`` helper, for every kernel that holds a whole row:
    ``q, scale = e4m3_row()(value, fp8_max, min_scale)`` with ``value`` the row in fp32 (masked
    lanes 0). :func:`~virnucpro.models.kernels.fp8_rows.quantize_rows` is its reference."""
    import triton
    import triton.language as tl

    @triton.jit
    def quantize_row(value, fp8_max, min_scale):  # type: ignore[no-untyped-def]
        scale = tl.maximum(tl.max(tl.abs(value), axis=0) / fp8_max, min_scale)
        q = tl.minimum(tl.maximum(value * (1.0 / scale), -fp8_max), fp8_max)  # one reciprocal per row
        return q, scale

    return quantize_row


def _build() -> Any:
    import triton
    import triton.language as tl

    quantize_row = e4m3_row()

    @triton.jit
    def quantize_rows_kernel(x_ptr, q_ptr, s_ptr, n_cols, fp8_max, min_scale,  # type: ignore[no-untyped-def]
                             BLOCK: tl.constexpr, GELU: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        offsets = row * n_cols + cols
        value = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if GELU:  # exact GELU: x/2 (1 + erf(x / sqrt 2))
            value = 0.5 * value * (1.0 + tl.erf(value * 0.7071067811865476))
        q, scale = quantize_row(value, fp8_max, min_scale)
        tl.store(s_ptr + row, scale)
        tl.store(q_ptr + offsets, q.to(q_ptr.dtype.element_ty), mask=mask)

    return quantize_rows_kernel


_KERNEL = TritonKernel("FP8 row-quantisation kernel", _build)


def quantize_rows_fused(x: torch.Tensor, *, gelu: bool = False,
                        warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_rows_reference` in one pass on CUDA (Triton) for a contiguous ``[N, K]``
    (``warps``: the launch's, for the benchmark's probe)."""
    if not (x.is_cuda and x.dim() == 2 and x.is_contiguous() and x.shape[0] > 0 and _KERNEL.usable()):
        return quantize_rows_reference(x, gelu=gelu)
    import triton

    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=E4M3, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(cols)
    if warps is None:  # the fastest measured (bench/probe_fp8.py, H200, 131,072 rows): 10,240 wide
        # 3.09 ms at 8 warps (4: 4.07, 16: 3.87; inductor 4.40); 2,560 wide 0.25 ms at 4 (8: 0.29)
        warps = 8 if block >= 8192 else 4 if block >= 512 else 2
    if not _KERNEL.launch((rows,), x, q, scale, cols, E4M3_MAX, MIN_SCALE, BLOCK=block, num_warps=warps,
                          GELU=gelu):
        return quantize_rows_reference(x, gelu=gelu)
    return q, scale
