"""ESM-2's q scaling and rotary embedding of q and k in one pass, from the fused q/k/v GEMM output.

The packed path's only other ``torch.compile`` use was this step (one pointwise kernel). Compiling
it costs every worker process the import of ``torch._dynamo``/``torch._inductor`` and a trace:
9–12 s of a worker's start on an H200 host (``bench/profile_start.py``, 2026-12-02), more than
every other part of the start together. This Triton kernel computes the same function with no
compiler in the process (Triton's own cache keeps the built kernel across processes).

Semantics (:func:`rotary_qk_reference`, the CPU path and the GPU tests' reference): from
``qkv [N, 3, heads, hd]`` (the GEMM output viewed per head), ``q = rotary(q·scaling)`` and
``k = rotary(k)`` with ``rotary(x) = x·cos + rotate_half(x)·sin`` (fair-esm's
``apply_rotary_pos_emb``), ``cos``/``sin`` ``[N, 1, hd]`` per token; arithmetic in fp32, each
output rounded once to the input's dtype (as the compiled version did); ``q`` and ``k`` come back
contiguous ``[N, heads, hd]``.
"""

from __future__ import annotations

from typing import Any

import torch

from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = ["rotary_qk", "rotary_qk_reference", "triton_rotary_available"]

_ROWS = 16  # tokens per program
_COLS = 256  # of the D/2 column pairs per program


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotary_qk_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rotary(q·scaling), rotary(k))`` in fp32 arithmetic, rounded once to ``qkv``'s dtype."""
    q, k = qkv.select(-3, 0).float(), qkv.select(-3, 1).float()
    c, s = cos.float(), sin.float()
    q = q * scaling
    return ((q * c + _rotate_half(q) * s).to(qkv.dtype).contiguous(),
            (k * c + _rotate_half(k) * s).to(qkv.dtype).contiguous())


def triton_rotary_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def rotary(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, n_rows, scaling,  # type: ignore[no-untyped-def]
               D: tl.constexpr, HD: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
        # columns are pairs (x1, x2) = (column j, column j + HD/2) of one head: each element is
        # loaded once and both outputs of a pair come from the same two registers
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        pairs = tl.program_id(1) * COLS + tl.arange(0, COLS)
        half = HD // 2
        mask = (rows < n_rows)[:, None] & (pairs < D // 2)[None, :]
        j = pairs % half
        first = ((pairs // half) * HD + j)[None, :]  # x1's column; x2 is half further
        rows64 = rows.to(tl.int64)[:, None]
        table = cos_ptr + rows64 * HD + j[None, :]
        c1 = tl.load(table, mask=mask, other=0.0).to(tl.float32)
        c2 = tl.load(table + half, mask=mask, other=0.0).to(tl.float32)
        table = sin_ptr + rows64 * HD + j[None, :]
        s1 = tl.load(table, mask=mask, other=0.0).to(tl.float32)
        s2 = tl.load(table + half, mask=mask, other=0.0).to(tl.float32)
        src = qkv_ptr + rows64 * (3 * D) + first
        out = rows64 * D + first
        q1 = tl.load(src, mask=mask, other=0.0).to(tl.float32) * scaling
        q2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32) * scaling
        tl.store(q_ptr + out, (q1 * c1 + q2 * -s1).to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(q_ptr + out + half, (q2 * c2 + q1 * s2).to(q_ptr.dtype.element_ty), mask=mask)
        k1 = tl.load(src + D, mask=mask, other=0.0).to(tl.float32)
        k2 = tl.load(src + D + half, mask=mask, other=0.0).to(tl.float32)
        tl.store(k_ptr + out, (k1 * c1 + k2 * -s1).to(k_ptr.dtype.element_ty), mask=mask)
        tl.store(k_ptr + out + half, (k2 * c2 + k1 * s2).to(k_ptr.dtype.element_ty), mask=mask)

    return rotary


_KERNEL = TritonKernel("rotary kernel", _build)


def _usable(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    rows = qkv.shape[0]
    return (
        qkv.is_cuda
        and qkv.dim() == 4
        and qkv.shape[1] == 3
        and qkv.shape[-1] % 2 == 0
        and qkv.is_contiguous()
        and rows > 0
        and tuple(cos.shape) == (rows, 1, qkv.shape[-1]) == tuple(sin.shape)
        and cos.is_contiguous()
        and sin.is_contiguous()
        and _KERNEL.usable()
    )


def rotary_qk(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotary_qk_reference`, one pass on CUDA (Triton) for a contiguous ``[N, 3, heads, hd]``."""
    if not _usable(qkv, cos, sin):
        return rotary_qk_reference(qkv, cos, sin, scaling)
    rows, _, heads, head_dim = qkv.shape
    dim = heads * head_dim
    q = torch.empty((rows, heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    grid = (-(-rows // _ROWS), -(-(dim // 2) // _COLS))
    if not _KERNEL.launch(grid, qkv, cos, sin, q, k, rows, float(scaling),
                          D=dim, HD=head_dim, ROWS=_ROWS, COLS=_COLS, num_warps=4):
        return rotary_qk_reference(qkv, cos, sin, scaling)
    return q, k
