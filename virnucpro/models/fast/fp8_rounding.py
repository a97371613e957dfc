"""Error-compensating rounding of a weight to e4m3 (GPTQ's rule), for ``--precision fp8``.

Rounding each weight to its nearest e4m3 value leaves an error ``E = W - Ŵ`` that is the same for
every token, so it survives the mean over a protein's residues that VirNucPro keeps; on ESM-2 3B
it was nearly all of FP8's error (``docs/benchmarks.md``, runs L3 and M1). The bias correction
(:func:`~virnucpro.models.fast.fp8.quantize_weight`) removes ``E·μ`` at the calibration
proteins' mean input ``μ``; a protein whose mean input lies elsewhere keeps ``E·(x̄ - μ)``.

GPTQ (Frantar et al., ICLR 2023) chooses the rounding instead: a row's values are rounded one
column at a time, and each column's rounding error is moved onto the columns not yet rounded in
proportion to how the calibration inputs couple them (through the inverse of their Gram matrix
``H = Σ x xᵀ``), so that ``E·x`` stays small for every input like the calibration ones, not only
at their mean. Rows are independent; each keeps its e4m3 scale from the original row (the row
rule of :mod:`~virnucpro.models.kernels.fp8_rows`), so the GEMM, the scales' layout and the cost
per token are those of nearest rounding. Done once, at load.

The column loop runs in blocks of :data:`BLOCK` columns: inside a block column by column
(:func:`round_block`: a Triton kernel on CUDA, each program a tile of rows; its PyTorch
reference elsewhere), and the block's errors reach the later columns in one GEMM.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, row_scale
from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = ["BLOCK", "DAMP", "compensated_rounding", "gram", "round_block", "round_block_reference"]

logger = logging.getLogger(__name__)

BLOCK = 128
"""Columns rounded one by one before their errors reach the rest in one GEMM."""
DAMP = 0.01
"""Added to the Gram matrix's diagonal, as a share of its mean: it keeps ``H`` invertible where the
calibration inputs do not span every direction, and bounds how far an error is moved."""
_ROWS = 32  # rows per program of the Triton kernel


def gram(x: torch.Tensor) -> torch.Tensor:
    """``Σ x xᵀ`` over the rows of ``x [tokens, K]``: ``[K, K]`` fp32. A bf16/fp16 ``x`` on CUDA
    multiplies on the tensor cores with fp32 sums (its products are exact in fp32); elsewhere,
    or where this torch lacks ``out_dtype``, in fp32."""
    if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(x.t(), x, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # a torch without mm's out_dtype: fp32 below
            pass
    x = x.float()
    return x.t() @ x


def round_block_reference(w: torch.Tensor, u: torch.Tensor,
                          scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round ``w [N, B]`` fp32 column by column to e4m3 at the row scales ``scale [N, 1]``, each
    column's error divided by ``u``'s diagonal entry and subtracted from the later columns along
    ``u``'s row (``u [B, B]``: the block of the upper Cholesky factor of ``H⁻¹``). Returns the e4m3
    values ``[N, B]`` and the scaled errors ``[N, B]`` fp32; ``w`` is not changed."""
    w = w.clone()
    q = torch.empty(w.shape, dtype=E4M3, device=w.device)
    err = torch.empty_like(w)
    s = scale[:, 0]
    for i in range(w.shape[1]):
        column = w[:, i]
        q[:, i] = (column / s).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        err[:, i] = (column - q[:, i].float() * s) / u[i, i]
        w[:, i + 1 :] -= err[:, i, None] * u[i, None, i + 1 :]
    return q, err


@functools.cache
def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def round_block_kernel(w_ptr, u_ptr, s_ptr, q_ptr, e_ptr, n_rows, width,  # type: ignore[no-untyped-def]
                           w_stride, u_stride, q_stride, e_stride, fp8_max,
                           ROWS: tl.constexpr, COLS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, COLS)
        live = rows < n_rows
        at = rows.to(tl.int64)
        w = tl.load(w_ptr + at[:, None] * w_stride + cols[None, :],
                    mask=live[:, None] & (cols[None, :] < width), other=0.0)
        scale = tl.load(s_ptr + rows, mask=live, other=1.0)
        for i in range(width):
            column = tl.sum(tl.where(cols[None, :] == i, w, 0.0), axis=1)
            ratio = tl.minimum(tl.maximum(tl.div_rn(column, scale), -fp8_max), fp8_max)
            q = ratio.to(q_ptr.dtype.element_ty)
            err = tl.div_rn(column - q.to(tl.float32) * scale, tl.load(u_ptr + i * u_stride + i))
            later = tl.load(u_ptr + i * u_stride + cols, mask=(cols > i) & (cols < width), other=0.0)
            w = w - err[:, None] * later[None, :]
            tl.store(q_ptr + at * q_stride + i, q, mask=live)
            tl.store(e_ptr + at * e_stride + i, err, mask=live)

    return round_block_kernel


_KERNEL = TritonKernel("FP8 compensated-rounding kernel", _build)


def round_block(w: torch.Tensor, u: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`round_block_reference`, in one Triton launch on CUDA (each program ``_ROWS`` rows)."""
    rows, width = w.shape
    if not (w.is_cuda and width <= BLOCK and rows > 0 and _KERNEL.usable()):
        return round_block_reference(w, u, scale)
    q = torch.empty((rows, width), dtype=E4M3, device=w.device)
    err = torch.empty((rows, width), dtype=torch.float32, device=w.device)
    u = u.contiguous()
    if not _KERNEL.launch(((rows + _ROWS - 1) // _ROWS,), w, u, scale, q, err, rows, width, w.stride(0),
                          u.stride(0), q.stride(0), err.stride(0), E4M3_MAX, ROWS=_ROWS, COLS=BLOCK,
                          num_warps=4):
        return round_block_reference(w, u, scale)
    return q, err


def _inverse_factor(gram: torch.Tensor, damp: float) -> torch.Tensor | None:
    """The upper Cholesky factor of ``(H + λI)⁻¹`` (``λ`` = ``damp`` × the mean diagonal, dead
    inputs given a diagonal of 1); None if it stays singular with ten times the damping."""
    h = gram.to(torch.float32, copy=True)
    diagonal = h.diagonal()
    diagonal[diagonal <= 0] = 1.0  # an input that is always 0: its weights do not matter
    mean = diagonal.mean()
    added = torch.zeros((), device=h.device)
    for lam in (damp, damp * 10):
        diagonal += lam * mean - added  # in place: no identity matrix of the input's width
        added = lam * mean
        lower, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0:
                return upper
    return None


def compensated_rounding(weight: torch.Tensor, gram: torch.Tensor, *,
                         damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ rounding of ``weight [out, in]`` to e4m3 with row-wise scales, given the Gram matrix
    ``gram [in, in]`` of calibration inputs (``Σ x xᵀ``, fp32): (e4m3 ``[out, in]``, scales
    ``[out, 1]`` fp32), the scales those of nearest rounding. Should ``H`` not be factorised,
    the weight is rounded to nearest (logged)."""
    with torch.no_grad():
        scale = row_scale(weight)
        upper = _inverse_factor(gram.to(weight.device), damp)
        if upper is None:
            logger.warning("FP8 rounding: a %s Gram matrix could not be factorised; that weight is "
                           "rounded to nearest", tuple(gram.shape))
            return (weight.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale
        w = weight.to(torch.float32, copy=True)
        q = torch.empty(w.shape, dtype=E4M3, device=w.device)
        width = w.shape[1]
        for lo in range(0, width, BLOCK):
            hi = min(lo + BLOCK, width)
            q[:, lo:hi], err = round_block(w[:, lo:hi], upper[lo:hi, lo:hi], scale)
            if hi < width:
                w[:, hi:].addmm_(err, upper[lo:hi, hi:], alpha=-1.0)
        return q, scale
