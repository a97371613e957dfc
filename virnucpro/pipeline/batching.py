"""Length-sorted, token-budgeted batches: the packing every worker uses.

A batch's cost is its padded size (longest sequence × batch size), so sorting by length first
keeps padding small. Returned batches are lists of indices into the caller's list; the caller
puts results back by index, so output order never depends on packing.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pack_batches", "padded_tokens"]


def padded_tokens(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Tokens a batch occupies once padded to its longest member."""
    return max(lengths[i] for i in batch) * len(batch) if batch else 0


def pack_batches(
    lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Split indices ``0..len(lengths)-1`` into batches of at most ``token_budget`` padded tokens.

    Longest first, so the first batch is the most memory-hungry one and an out-of-memory error
    shows up at once. A single sequence longer than the budget forms a batch of its own.
    """
    if token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = 0
    for i in order:
        length = lengths[i]
        new_max = max(current_max, length)
        too_big = new_max * (len(current) + 1) > token_budget
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        if current and (too_big or too_many):
            batches.append(current)
            current, new_max = [], length
        current.append(i)
        current_max = new_max
    if current:
        batches.append(current)
    return batches
