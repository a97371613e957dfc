"""Packed batches: sequences of different lengths laid end to end, no padding anywhere.

A padded batch ``[B, T]`` spends GEMM and element-wise work on ``B·T - Σ len`` padding tokens
(5–7% on real samples, more for DNABERT-S whose token counts spread widely). Packed, every row
of every matrix product is a real token: the encoders work on ``[N, D]`` with ``N = Σ len``, and
only attention needs to know where one sequence ends — it gets the cumulative lengths
(``cu_seqlens``) and runs flash attention's variable-length kernel, which never looks across a
boundary. Used for ESM-2 (rotary positions are per sequence, so packing changes nothing else).
DNABERT-S stays padded: its ALiBi bias would need the kernel's ``alibi_slopes``, which torch's
flash build refuses ("This flash attention build does not support alibi", torch 2.11).

Everything index-like is built on the host with numpy and sent in one pinned copy per tensor.
Pooling gathers each sequence's rows into ``[B, T_max, D]`` (zero rows for positions that do not
count) and sums: deterministic (no atomic adds), so a run reproduces bit for bit.

On the CPU, or in fp32 (flash needs bf16/fp16), :func:`varlen_attention` runs one SDPA call per
sequence: the reference the GPU kernel is tested against.
"""

from __future__ import annotations

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


def _send(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def pack_rows(rows: Sequence[Sequence[int]], device: torch.device) -> PackedBatch:
    """Lay token rows end to end; the mean leaves out each row's first and last token (ESM-2's
    BOS/EOS)."""
    if not rows:
        raise ValueError("a packed batch needs at least one sequence")
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if lengths.min() < 3:
        raise ValueError("every packed sequence needs a token to average over")
    total = int(lengths.sum())
    starts = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    tokens = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=total)
    seq_index = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], lengths)
    width = int(lengths.max())
    column = np.arange(width, dtype=np.int64)[None, :]
    first = 1
    last = lengths[:, None] - 1  # exclusive
    counted = (column >= first) & (column < last)
    gather = np.where(counted, starts[:-1, None] + column, total)
    counts = (last[:, 0] - first).astype(np.float32)
    return PackedBatch(
        tokens=_send(tokens, device),
        positions=_send(positions, device),
        seq_index=_send(seq_index, device),
        cu_seqlens=_send(starts.astype(np.int32), device),
        gather=_send(gather, device),
        counts=_send(counts, device),
        lengths=tuple(int(n) for n in lengths),
        max_length=width,
    )


def pool_packed(hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Mean of ``hidden [N, D]`` over each sequence's counted positions, fp32 ``[B, D]``."""
    rows = hidden.to(torch.float32)
    padded = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])[batch.gather]
    return padded.sum(dim=1) / batch.counts[:, None]


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
