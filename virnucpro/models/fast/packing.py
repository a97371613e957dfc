"""Packed batches: sequences of different lengths laid end to end, no padding anywhere.

A padded batch ``[B, T]`` spends GEMM and element-wise work on ``B·T - Σ len`` padding tokens
(5–7% on real samples, more for DNABERT-S whose token counts spread widely). Packed, every row
of every matrix product is a real token: the encoders work on ``[N, D]`` with ``N = Σ len``, and
only attention needs to know where one sequence ends — it gets the cumulative lengths
(``cu_seqlens``) and runs flash attention's variable-length kernel, which never looks across a
boundary. Used for ESM-2 (rotary positions are per sequence, so packing changes nothing else)
and for DNABERT-S, whose ALiBi attention runs in its own Triton kernel instead
(:mod:`~virnucpro.models.kernels.alibi_varlen`: torch's flash build refuses ALiBi).

Everything index-like is built on the host with numpy into one buffer and sent in one pinned copy.
Pooling gathers each sequence's rows into ``[B, T_max, D]`` (zero rows for positions that do not
count) and sums: deterministic (no atomic adds), so a run reproduces bit for bit.

On the CPU, or in fp32 (flash needs bf16/fp16), :func:`varlen_attention` runs one SDPA call per
sequence: the reference the GPU kernel is tested against.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PackedBatch", "pack_rows", "varlen_attention", "pool_packed", "flash_varlen_usable"]


@dataclass(frozen=True)
class PackedBatch:
    """One packed batch on its device.

    ``tokens``/``positions``/``seq_index`` are ``[N]`` (position within its sequence, which
    sequence); ``cu_seqlens`` ``[B+1]`` int32; ``gather`` ``[B, T_max]`` indexes rows of the
    packed hidden state with ``N`` (one past the end: a zero row) where a position does not
    count towards the mean; ``counts`` ``[B]`` fp32 is how many do.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    seq_index: torch.Tensor
    cu_seqlens: torch.Tensor
    gather: torch.Tensor
    counts: torch.Tensor
    lengths: tuple[int, ...]
    max_length: int

    @property
    def n_tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def n_sequences(self) -> int:
        return len(self.lengths)


def pack_rows(
    rows: Sequence[Sequence[int]], device: torch.device, *, pool_ends: bool = False
) -> PackedBatch:
    """Lay token rows end to end. The mean leaves out each row's first and last token (ESM-2's
    BOS/EOS), or, with ``pool_ends``, counts every token (DNABERT-S's ``[CLS]``/``[SEP]`` too).

    Every index array is written into ONE int64 host buffer (pinned on CUDA) and sent in one
    copy; the tensors are views of it on the device (``cu_seqlens``/``counts`` converted there).
    A DNABERT-S batch is ~100k tokens and as little GPU time as ~50 ms, so host time per batch
    counts (measured on an H200 host: 22 ms per 1,024-sequence batch with one copy per array and
    a Python generator over the tokens).
    """
    if not rows:
        raise ValueError("a packed batch needs at least one sequence")
    n = len(rows)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)
    if lengths.min() < (1 if pool_ends else 3):
        raise ValueError("every packed sequence needs a token to average over")
    total = int(lengths.sum())
    width = int(lengths.max())
    sizes = (total, total, total, n + 1, n * width, n)  # tokens positions seq_index starts gather counts
    bounds = np.cumsum((0, *sizes))
    host = torch.empty(int(bounds[-1]), dtype=torch.int64, pin_memory=device.type == "cuda")
    buf = host.numpy()
    tokens, positions, seq_index, starts, gather, counts = (
        buf[a:b] for a, b in zip(bounds[:-1], bounds[1:])
    )
    tokens[:] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
    starts[0] = 0
    np.cumsum(lengths, out=starts[1:])
    seq_index[:] = np.repeat(np.arange(n, dtype=np.int64), lengths)
    np.subtract(np.arange(total, dtype=np.int64), np.repeat(starts[:-1], lengths), out=positions)
    column = np.arange(width, dtype=np.int64)[None, :]
    first = 0 if pool_ends else 1
    last = lengths[:, None] - (0 if pool_ends else 1)  # exclusive
    counted = (column >= first) & (column < last)
    gather.reshape(n, width)[:] = np.where(counted, starts[:-1, None] + column, total)
    counts[:] = last[:, 0] - first
    sent = host.to(device, non_blocking=True) if device.type == "cuda" else host
    views = [sent[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    return PackedBatch(
        tokens=views[0],
        positions=views[1],
        seq_index=views[2],
        cu_seqlens=views[3].to(torch.int32),
        gather=views[4].view(n, width),
        counts=views[5].to(torch.float32),
        lengths=tuple(lengths.tolist()),
        max_length=width,
    )


def pool_packed(hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Mean of ``hidden [N, D]`` over each sequence's counted positions, fp32 ``[B, D]``."""
    padded = torch.cat([hidden, hidden.new_zeros(1, hidden.shape[1])])[batch.gather]
    return padded.sum(dim=1, dtype=torch.float32) / batch.counts[:, None]  # fp32 sums of the rows


def flash_varlen_usable(q: torch.Tensor) -> bool:
    """Flash attention's variable-length kernel runs on CUDA in bf16/fp16."""
    return q.is_cuda and q.dtype in (torch.bfloat16, torch.float16)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedBatch, scale: float
) -> torch.Tensor:
    """Attention within each packed sequence: ``q, k, v [N, heads, hd]`` -> ``[N, heads, hd]``."""
    if flash_varlen_usable(q):
        return torch.ops.aten._flash_attention_forward(
            q, k, v, batch.cu_seqlens, batch.cu_seqlens, batch.max_length, batch.max_length,
            0.0, False, False, scale=scale,
        )[0]  # fmt: skip
    return _reference_attention(q, k, v, batch, scale)


def _reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedBatch, scale: float
) -> torch.Tensor:
    """One SDPA call per sequence (CPU, fp32): what the flash kernel must reproduce."""
    out = torch.empty_like(q)
    start = 0
    for length in batch.lengths:
        end = start + length
        qs, ks, vs = (t[start:end].transpose(0, 1)[None] for t in (q, k, v))  # [1, heads, L, hd]
        ctx = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)
        out[start:end] = ctx[0].transpose(0, 1)
        start = end
    return out
