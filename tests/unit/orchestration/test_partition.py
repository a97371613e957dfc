"""Spreading a night over GPU slots: largest first to the least-loaded slot; gzip sizes unpacked."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnucpro.orchestration.partition import input_size, partition


def test_largest_first_to_the_least_loaded_slot() -> None:
    sizes = {"a": 10, "b": 8, "c": 6, "d": 3}
    slots = partition(list(sizes), sizes.__getitem__, 2)
    assert slots == [["a", "d"], ["b", "c"]]  # 13 vs 14: the slots finish together


def test_more_slots_than_samples_leaves_slots_empty() -> None:
    assert partition(["x"], lambda _: 1, 3) == [["x"], [], []]


def test_queued_work_counts() -> None:
    # slot 0 still has 20 units queued: the re-dispatched samples go to slot 1 first
    assert partition(["p", "q"], lambda s: {"p": 5, "q": 4}[s], 2, queued=[20, 0]) == [[], ["p", "q"]]


def test_equal_sizes_keep_their_order() -> None:
    assert partition(["a", "b", "c", "d"], lambda _: 1, 2) == [["a", "c"], ["b", "d"]]


def test_partition_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        partition(["a"], lambda _: 1, 0)


def test_gzip_size_is_the_uncompressed_size(tmp_path: Path) -> None:
    text = ">r1\n" + "ACGT" * 5000 + "\n"
    plain, packed = tmp_path / "s.fa", tmp_path / "s.fa.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt") as handle:
        handle.write(text)
    assert packed.stat().st_size < 1000
    assert input_size(packed) == input_size(plain) == len(text)
