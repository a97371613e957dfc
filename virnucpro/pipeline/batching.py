"""Length-sorted, token-budgeted batches: the packing every worker uses.

A batch's cost is its padded size (longest sequence × batch size), so sorting by length first
keeps padding small. Returned batches are lists of indices into the caller's list; the caller
puts results back by index, so output order never depends on packing.

With ``uniform_fraction``, a run of equal-length sequences that fills at least that share of a
batch is packed into batches of its own: every sequence in such a batch has the same length,
so the encoder needs no attention mask (SDPA's flash kernel) and pads nothing. Proteins from
full chunks are mostly one length (166 aa for 500-bp chunks, 99/100 aa for 300 bp), so most
batches of a real sample are uniform; the rest are packed as before.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pack_batches", "padded_tokens", "is_uniform"]


def padded_tokens(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Tokens a batch occupies once padded to its longest member."""
    return max(lengths[i] for i in batch) * len(batch) if batch else 0


def is_uniform(lengths: Sequence[int], batch: Sequence[int]) -> bool:
    """Whether every sequence of ``batch`` has the same length (no padding, no mask)."""
    return len({lengths[i] for i in batch}) <= 1


def _runs(order: list[int], lengths: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in order:
        if runs and lengths[runs[-1][0]] == lengths[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def pack_batches(
    lengths: Sequence[int],
    token_budget: int,
    max_batch_size: int | None = None,
    uniform_fraction: float | None = None,
    max_padding: float | None = None,
) -> list[list[int]]:
    """Split indices ``0..len(lengths)-1`` into batches of at most ``token_budget`` padded tokens.

    Longest first, so the first batch is the most memory-hungry one and an out-of-memory error
    shows up at once. A single sequence longer than the budget forms a batch of its own.

    - ``uniform_fraction`` (0..1, or None): equal-length runs of at least
      ``uniform_fraction × token_budget`` tokens get batches of their own (see the module text).
    - ``max_padding`` (0..1, or None): a batch that already holds a quarter of the budget is
      closed before a sequence that would make more than this share of it padding, so batches of
      widely spread lengths (DNABERT-S tokens) cover narrow length ranges.
    """
    if token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    if uniform_fraction is not None and not 0 < uniform_fraction <= 1:
        raise ValueError("uniform_fraction must be in (0, 1]")
    if max_padding is not None and not 0 <= max_padding < 1:
        raise ValueError("max_padding must be in [0, 1)")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = 0
    current_sum = 0
    min_fill = token_budget / 4

    def close() -> None:
        nonlocal current, current_max, current_sum
        if current:
            batches.append(current)
        current, current_max, current_sum = [], 0, 0

    def add(i: int) -> None:
        nonlocal current_max, current_sum
        length = lengths[i]
        new_max = max(current_max, length)
        size = new_max * (len(current) + 1)
        too_big = size > token_budget
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        too_padded = (
            max_padding is not None
            and current_max * len(current) >= min_fill
            and (size - current_sum - length) / size > max_padding
        )
        if current and (too_big or too_many or too_padded):
            close()
            new_max = length
        current.append(i)
        current_max = new_max
        current_sum += length

    for run in _runs(order, lengths):
        length = lengths[run[0]]
        threshold = None if uniform_fraction is None else uniform_fraction * token_budget
        if threshold is None or length * len(run) < threshold:
            for i in run:
                add(i)
            continue
        close()  # the run starts its own batches
        per_batch = max(1, token_budget // length)
        if max_batch_size is not None:
            per_batch = min(per_batch, max_batch_size)
        pieces = [run[k : k + per_batch] for k in range(0, len(run), per_batch)]
        if len(pieces) > 1 and length * len(pieces[-1]) < threshold:
            for i in pieces.pop():  # a small remainder joins the next, shorter sequences
                add(i)
            batches.extend(pieces)
        else:
            batches.extend(pieces)
    close()
    return batches
