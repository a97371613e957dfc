"""Per-row e4m3 quantisation of an activation in one pass over memory, fc1's GELU optionally first.

The FP8 ESM-2 path quantises two activations per layer that no norm kernel writes: the
attention output (2,560 wide, the out-projection's input) and fc1's output after its GELU
(10,240 wide, fc2's input). One program holds a whole row in registers, as two power-of-two
blocks that cover it exactly (:func:`row_parts`): read once (bf16), written once (e4m3) with its
scale. Measured on an H200 (``bench/probe_fp8.py --parts quant``, 131,072 rows), inductor's
compiled passes took 4.4 ms (GELU) and 0.71 ms; this pass with the erf GELU in one block rounded
up to 16,384 took 3.09 and 0.25 ms, and it was bound by instruction issue, not memory: sm_90
code of that launch (``cuobjdump -sass``) spent 2,576 instructions per thread on 64 values,
2,048 of them in libdevice's erf, with 37.5% of the lanes masked off. Hence the two blocks, and
fc1's GELU in the tanh form written as ``v / (1 + exp(-2u))`` (one exp, one fast division): 976
instructions per thread for 40 values. Walking a wide row in chunks twice, to hold less at a
time, measured 3.4-3.9 ms, and two kernels, the scales then the values, 3.6 ms. Quantising
inside fc1's GEMM epilogue, which would save writing and reading fc1's bf16 output, is not built.

Numerics are :func:`~virnucpro.models.kernels.fp8_rows.quantize_rows`'s rule (one place): fp32
arithmetic, ``scale = max(amax / 448, 1e-12)``, values times the scale's reciprocal (within one
fp32 ulp of the division: IEEE division per element made the pass 2× slower, same probe),
clamped and rounded to e4m3 once. The GELU is :func:`fc1_gelu`'s, the tanh form that the bf16
and fp16 paths' cuBLASLt epilogue computes. Where the kernel cannot run (no CUDA, no Triton, a
launch failed), the PyTorch reference does.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, MIN_SCALE, quantize_rows
from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = ["e4m3_row", "fc1_gelu", "quantize_rows_fused", "quantize_rows_reference", "row_parts",
           "triton_quantize_available"]


def fc1_gelu(x: torch.Tensor) -> torch.Tensor:
    """The FP8 path's GELU of fc1's output, in fp32: the tanh form, as the bf16/fp16 fast paths'
    cuBLASLt epilogue (``F.gelu(approximate="tanh")``; it differs from the exact erf GELU by at
    most ~3e-4, far below e4m3's rounding)."""
    return F.gelu(x.float(), approximate="tanh")


def quantize_rows_reference(x: torch.Tensor, *, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows(fc1_gelu(x))`` (or of ``x``) in PyTorch, fp32: (e4m3 ``[N, K]``, scale ``[N, 1]``)."""
    return quantize_rows(fc1_gelu(x) if gelu else x)


def triton_quantize_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


@functools.cache
def _rule() -> tuple[Any, Any, Any]:
    """The e4m3 row rule as ``@triton.jit`` helpers: ``scale, inverse = row_scale(amax, ...)``,
    ``values(value, inverse, fp8_max)``, and both at once for a row held in one tensor."""
    import triton
    import triton.language as tl

    @triton.jit
    def row_scale(amax, fp8_max, min_scale):  # type: ignore[no-untyped-def]
        scale = tl.maximum(amax / fp8_max, min_scale)
        return scale, 1.0 / scale  # one reciprocal per row

    @triton.jit
    def values(value, inverse, fp8_max):  # type: ignore[no-untyped-def]
        return tl.minimum(tl.maximum(value * inverse, -fp8_max), fp8_max)

    @triton.jit
    def quantize_row(value, fp8_max, min_scale):  # type: ignore[no-untyped-def]
        scale, inverse = row_scale(tl.max(tl.abs(value), axis=0), fp8_max, min_scale)
        return values(value, inverse, fp8_max), scale

    return row_scale, values, quantize_row


def e4m3_row() -> Any:
    """The e4m3 row rule as a ``@triton.jit`` helper, for every kernel that holds a whole row:
    ``q, scale = e4m3_row()(value, fp8_max, min_scale)`` with ``value`` the row in fp32 (masked
    lanes 0). :func:`~virnucpro.models.kernels.fp8_rows.quantize_rows` is its reference."""
    return _rule()[2]


def row_parts(n_cols: int) -> tuple[int, int]:
    """A row of ``n_cols`` as two power-of-two blocks: the largest that fits (no mask) and the
    rest rounded up (masked; at least 1). 10,240 = 8,192 + 2,048 and 2,560 = 2,048 + 512 waste no
    lane; one block rounded up to 16,384 computed 60% more lanes than the row has."""
    head = 1 << (n_cols.bit_length() - 1)
    rest = n_cols - head
    return head, (1 << (rest - 1).bit_length()) if rest else 1


def _build() -> Any:
    import triton
    import triton.language as tl

    row_scale, values, _ = _rule()

    @triton.jit
    def gelu_tanh(v):  # type: ignore[no-untyped-def]
        # 0.5 v (1 + tanh(u)) = v / (1 + exp(-2u)), u = sqrt(2/pi) (v + 0.044715 v^3): one exp
        # and one fast division; libdevice's erf took 2.5x the instructions of the whole pass
        two_u = v * (1.5957691216057308 + 0.07135481627241893 * v * v)
        return tl.fdiv(v, 1.0 + tl.exp(tl.minimum(-two_u, 80.0)), ieee_rounding=False)

    @triton.jit
    def quantize_rows_kernel(x_ptr, q_ptr, s_ptr, n_cols, fp8_max, min_scale,  # type: ignore[no-untyped-def]
                             HEAD: tl.constexpr, TAIL: tl.constexpr, GELU: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        head_at = row * n_cols + tl.arange(0, HEAD)  # HEAD <= n_cols: no mask
        tail_cols = HEAD + tl.arange(0, TAIL)
        tail_mask = tail_cols < n_cols
        tail_at = row * n_cols + tail_cols
        head = tl.load(x_ptr + head_at).to(tl.float32)
        tail = tl.load(x_ptr + tail_at, mask=tail_mask, other=0.0).to(tl.float32)
        if GELU:
            head = gelu_tanh(head)
            tail = gelu_tanh(tail)
        amax = tl.maximum(tl.max(tl.abs(head), axis=0), tl.max(tl.abs(tail), axis=0))
        scale, inverse = row_scale(amax, fp8_max, min_scale)
        tl.store(s_ptr + row, scale)
        tl.store(q_ptr + head_at, values(head, inverse, fp8_max).to(q_ptr.dtype.element_ty))
        tl.store(q_ptr + tail_at, values(tail, inverse, fp8_max).to(q_ptr.dtype.element_ty), mask=tail_mask)

    return quantize_rows_kernel


_KERNEL = TritonKernel("FP8 row-quantisation kernel", _build)


def quantize_rows_fused(x: torch.Tensor, *, gelu: bool = False,
                        warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_rows_reference` in one pass on CUDA (Triton) for a contiguous ``[N, K]``
    (``warps``: the launch's, for the benchmark's probe)."""
    if not (x.is_cuda and x.dim() == 2 and x.is_contiguous() and x.shape[0] > 0 and _KERNEL.usable()):
        return quantize_rows_reference(x, gelu=gelu)
    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=E4M3, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    head, tail = row_parts(cols)
    if warps is None:  # the fastest measured (bench/probe_fp8.py, H200, 131,072 rows): 10,240 wide
        # 8 warps (erf GELU in one 16,384 block: 3.09 ms; 4: 4.07, 16: 3.87); 2,560 wide 4 (8: 0.29)
        warps = 8 if head >= 8192 else 4 if head >= 512 else 2
    if not _KERNEL.launch((rows,), x, q, scale, cols, E4M3_MAX, MIN_SCALE, HEAD=head, TAIL=tail,
                          num_warps=warps, GELU=gelu):
        return quantize_rows_reference(x, gelu=gelu)
    return q, scale
