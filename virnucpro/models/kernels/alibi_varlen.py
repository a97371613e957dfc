"""DNABERT-S attention on packed sequences: ALiBi inside the kernel, no bias tensor, no padding.

torch's flash build refuses ALiBi ("This flash attention build does not support alibi", torch
2.11), and its memory-efficient kernel needs a ``[B, heads, T, T]`` bias tensor and a padded
batch. Here one Triton kernel (:func:`alibi_varlen_attention`) takes the packed q/k/v of a
:class:`~virnucpro.models.fast.packing.PackedBatch` straight from the fused QKV projection
(``[N, 3, heads, head]``, read through its strides: no split or transpose copies) and computes,
for each sequence and head,

    softmax(q·kᵀ·scale − slope_h·|i − j|) · v

over that sequence's own keys only, with an online softmax in fp32 (exp2) over key blocks, as
flash attention does. The bias is what DNABERT-S's padded module adds
(:meth:`~virnucpro.models.reference.dnabert.DnabertS.attention_bias`): its padding term
(−10,000 on padded keys) only removes keys that a packed sequence does not have.

:func:`alibi_varlen_reference` is the same function in plain PyTorch (one SDPA call per
sequence): the CPU path and what the GPU tests hold the kernel to. The kernel is for CUDA in
bf16/fp16 with a power-of-two head size of 16–128 (DNABERT-S: 64); elsewhere the reference runs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.triton_support import TritonKernel

if TYPE_CHECKING:  # only its fields are read: the kernels do not import the fast path
    from virnucpro.models.fast.packing import PackedBatch

__all__ = [
    "alibi_varlen_attention",
    "alibi_varlen_reference",
    "alibi_varlen_usable",
    "triton_alibi_available",
]

BLOCK_M = 64
"""Queries per program (a 500-bp chunk is ~100 DNABERT-S tokens: two query blocks)."""
BLOCK_N = 32
"""Keys per step of the online softmax. 64 × 32 with 4 warps and 3 stages was the fastest of 54
shapes on an H200: 0.30 ms for 1,008 sequences of 90–111 tokens, 12 heads (64 × 64, 2 stages:
0.38 ms; SDPA's memory-efficient kernel on the same batch padded, with a bias: 0.85 ms)."""


def alibi_varlen_reference(
    qkv: torch.Tensor, batch: PackedBatch, slopes: torch.Tensor, scale: float
) -> torch.Tensor:
    """``qkv [N, 3, heads, head]`` -> ``[N, heads, head]``: one SDPA call per sequence with the
    ALiBi bias ``−slope·|i − j|`` (in ``qkv``'s dtype, as the fast padded path adds it)."""
    out = qkv.new_empty((qkv.shape[0], qkv.shape[2], qkv.shape[3]))
    start = 0
    for length in batch.lengths:
        end = start + length
        q, k, v = (qkv[start:end, i].transpose(0, 1)[None] for i in range(3))  # [1, heads, L, hd]
        position = torch.arange(length, device=qkv.device)
        distance = (position[None, :] - position[:, None]).abs()
        bias = (slopes.float()[:, None, None] * -distance).to(qkv.dtype)[None]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        out[start:end] = ctx[0].transpose(0, 1)
        start = end
    return out


def alibi_varlen_usable(qkv: torch.Tensor) -> bool:
    """Whether :func:`alibi_varlen_attention` runs the Triton kernel for this input."""
    head = qkv.shape[-1]
    return (
        qkv.is_cuda
        and qkv.dim() == 4
        and qkv.shape[1] == 3
        and qkv.stride(-1) == 1
        and qkv.dtype in (torch.bfloat16, torch.float16)
        and head in (16, 32, 64, 128)
        and _KERNEL.usable()
    )


def alibi_varlen_attention(
    qkv: torch.Tensor, batch: PackedBatch, slopes: torch.Tensor, scale: float,
    *, block_m: int = BLOCK_M, block_n: int = BLOCK_N, warps: int = 4, stages: int = 3,
) -> torch.Tensor:
    """:func:`alibi_varlen_reference`, as one Triton kernel on CUDA (see the module).

    ``slopes`` fp32 ``[heads]`` on the same device; returns ``[N, heads, head]`` contiguous.
    """
    if not alibi_varlen_usable(qkv):
        return alibi_varlen_reference(qkv, batch, slopes, scale)
    rows, _, heads, head = qkv.shape
    out = torch.empty((rows, heads, head), dtype=qkv.dtype, device=qkv.device)
    blocks = -(-batch.max_length // block_m)
    grid = (batch.n_sequences * blocks, heads)  # a sequence's query blocks side by side (its k/v in L2)
    launched = _KERNEL.launch(
        grid,
        qkv, out, batch.cu_seqlens, slopes.float().contiguous(), scale * math.log2(math.e),
        qkv.stride(0), qkv.stride(1), qkv.stride(2), out.stride(0), out.stride(1), blocks,
        HEAD=head, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if not launched:
        return alibi_varlen_reference(qkv, batch, slopes, scale)
    return out


def triton_alibi_available() -> bool:
    """Triton importable and a CUDA device present (the kernel is CUDA-only)."""
    return _KERNEL.available()


def _build() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def alibi_varlen(  # type: ignore[no-untyped-def]
        qkv_ptr, out_ptr, cu_ptr, slopes_ptr, scale_log2,
        stride_row, stride_part, stride_head, out_stride_row, out_stride_head, blocks,
        HEAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        seq = tl.program_id(0) // blocks  # grid axis 0 (up to 2³¹ − 1): sequences × query blocks
        block = tl.program_id(0) % blocks
        head = tl.program_id(1)
        start = tl.load(cu_ptr + seq).to(tl.int64)
        length = tl.load(cu_ptr + seq + 1).to(tl.int64) - start
        if block * BLOCK_M < length:
            log2e: tl.constexpr = 1.4426950408889634
            slope = tl.load(slopes_ptr + head) * log2e
            rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
            cols = tl.arange(0, BLOCK_N)
            dims = tl.arange(0, HEAD)
            row_ok = rows < length
            base = qkv_ptr + head * stride_head
            q = tl.load(
                base + (start + rows)[:, None] * stride_row + dims[None, :],
                mask=row_ok[:, None], other=0.0,
            )
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            acc = tl.zeros([BLOCK_M, HEAD], dtype=tl.float32)
            for first in range(0, length, BLOCK_N):
                keys = first + cols
                key_ok = keys < length
                offsets = (start + keys)[:, None] * stride_row + dims[None, :]
                k = tl.load(base + stride_part + offsets, mask=key_ok[:, None], other=0.0)
                s = tl.dot(q, tl.trans(k)) * scale_log2
                distance = tl.abs(rows[:, None] - keys[None, :]).to(tl.float32)
                s = tl.where(key_ok[None, :], s - slope * distance, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.exp2(s - m_new[:, None])
                alpha = tl.exp2(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(base + 2 * stride_part + offsets, mask=key_ok[:, None], other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
            out = acc / l_i[:, None]
            tl.store(
                out_ptr + (start + rows)[:, None] * out_stride_row + head * out_stride_head
                + dims[None, :],
                out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None],
            )  # fmt: skip

    return alibi_varlen


_KERNEL = TritonKernel("ALiBi attention", _build)
