"""Cutting a sequence into overlapping chunks exactly as the original (REFERENCE §2).

For a sequence of length ``L`` and chunk length ``c``:

- ``n = ceil(L / c)`` chunks; none at all when ``L = 0``; one chunk (the whole sequence) when L ≤ c.
- ``R = n·c − L`` is the overlap to spread, ``lo = floor(R / n)`` (the original divides by ``n``,
  not ``n − 1``), ``extra = R − lo·(n − 1)`` and the shifts are
  ``[lo + 1]·extra ++ [lo]·max(0, n − 1 − extra) ++ [0]``.
- Chunk ``k`` starts at ``s_k = k·c − (shifts[0] + … + shifts[k−1])`` and is ``seq[s_k : s_k + c]``,
  cut at ``L``; so the last chunk is usually shorter than ``c``.

Only the first ``n − 1`` shifts are ever summed, so the start has the closed form
``s_k = k·(c − lo) − min(k, extra)`` (``extra`` may exceed ``n − 1``, in which case every summed
shift is ``lo + 1``). The chunk ID is ``<record_id>_chunk_<k+1>``; case is preserved.

In 1-based inclusive base-pair coordinates of the record (:func:`chunk_spans`, what the region
table and ``provirus.fna`` report), chunk ``k`` covers ``s_k + 1`` to ``min(s_k + c, L)``.
"""

from __future__ import annotations

from virnucpro.domain.records import Chunk

__all__ = ["chunk_count", "chunk_starts", "chunk_spans", "chunk_sequence"]


def chunk_count(length: int, chunk_length: int) -> int:
    """``ceil(length / chunk_length)``: the number of chunks of a sequence (0 for an empty one)."""
    _check(length, chunk_length)
    return -(-length // chunk_length)


def chunk_starts(length: int, chunk_length: int) -> list[int]:
    """The 0-based start of every chunk of a sequence of ``length`` (REFERENCE §2)."""
    n = chunk_count(length, chunk_length)
    if n == 0:
        return []
    overlap = n * chunk_length - length
    lo = overlap // n
    extra = overlap - lo * (n - 1)
    step = chunk_length - lo
    return [k * step - min(k, extra) for k in range(n)]


def chunk_spans(length: int, chunk_length: int) -> list[tuple[int, int]]:
    """``(first, last)`` base of every chunk, 1-based and inclusive (the last one cut at L)."""
    return [
        (start + 1, min(start + chunk_length, length))
        for start in chunk_starts(length, chunk_length)
    ]


def chunk_sequence(record_id: str, sequence: str, chunk_length: int) -> list[Chunk]:
    """Cut ``sequence`` into the original's chunks; ``[]`` for an empty sequence."""
    return [
        Chunk(
            record_id=record_id,
            index=k + 1,
            start=start,
            sequence=sequence[start : start + chunk_length],
        )
        for k, start in enumerate(chunk_starts(len(sequence), chunk_length))
    ]


def _check(length: int, chunk_length: int) -> None:
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be at least 1, not {chunk_length}")
    if length < 0:
        raise ValueError(f"length must not be negative, not {length}")
