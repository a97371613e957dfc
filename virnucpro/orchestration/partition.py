"""Spreading a night's samples over GPU slots so the slots finish together (pure Python).

A sample's cost is taken as its sequence size in bytes (:func:`input_size`: the file size, or for
gzip the uncompressed size from the gzip trailer), which is what chunking, embedding and
classification scale with. :func:`partition` is the classic largest-first greedy (LPT): each
sample, largest first, goes to the slot with the least work so far; slots may start with work
already queued (a re-dispatch onto slots that are still busy).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["input_size", "partition"]

T = TypeVar("T")


def input_size(path: Path) -> int:
    """Bytes of sequence text in ``path``: the file's size, or a gzip's uncompressed size (its
    trailer's ISIZE, exact below 4 GiB; larger members count at least their compressed size)."""
    path = Path(path)
    size = path.stat().st_size
    if path.suffix != ".gz" or size < 18:
        return size
    with open(path, "rb") as handle:
        handle.seek(-4, 2)
        (uncompressed,) = struct.unpack("<I", handle.read(4))
    return max(uncompressed, size)


def partition(
    items: Sequence[T],
    size: Callable[[T], int],
    n_slots: int,
    queued: Sequence[float] | None = None,
) -> list[list[T]]:
    """``items`` over ``n_slots`` lists, largest first to the least-loaded slot (ties: the lower
    slot; equal sizes keep their input order). ``queued`` is work each slot already has."""
    if n_slots < 1:
        raise ValueError("partition needs at least one slot")
    loads = list(queued) if queued is not None else [0.0] * n_slots
    if len(loads) != n_slots:
        raise ValueError("queued must give one load per slot")
    slots: list[list[T]] = [[] for _ in range(n_slots)]
    order = sorted(range(len(items)), key=lambda i: (-size(items[i]), i))
    for i in order:
        target = min(range(n_slots), key=lambda k: (loads[k], k))
        slots[target].append(items[i])
        loads[target] += size(items[i])
    return slots
