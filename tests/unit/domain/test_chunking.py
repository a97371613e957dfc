"""Chunking exactly as REFERENCE §2, with its examples and property tests."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro.domain.chunking import chunk_count, chunk_sequence, chunk_spans, chunk_starts


def _literal_reference_starts(length: int, c: int) -> list[int]:
    """REFERENCE §2 written out literally (list of shifts, running sums)."""
    n = math.ceil(length / c)
    if n == 0:
        return []
    overlap = n * c - length
    lo = math.floor(overlap / n)
    extra = overlap - lo * (n - 1)
    shifts = [lo + 1] * extra + [lo] * max(0, n - 1 - extra) + [0]
    shift_sums = [0, *itertools.accumulate(shifts)]
    return [k * c - shift_sums[k] for k in range(n)]


def _spans(length: int, c: int) -> list[tuple[int, int]]:
    return [(start, min(start + c, length)) for start in chunk_starts(length, c)]


def test_reference_example_501() -> None:
    assert _spans(501, 500) == [(0, 500), (250, 501)]


def test_reference_example_1200() -> None:
    assert _spans(1200, 500) == [(0, 500), (399, 899), (798, 1200)]


def test_chunk_spans_are_one_based_inclusive() -> None:
    assert chunk_spans(1200, 500) == [(1, 500), (400, 899), (799, 1200)]
    assert chunk_spans(501, 500) == [(1, 500), (251, 501)]
    assert chunk_spans(100, 300) == [(1, 100)]
    assert chunk_spans(0, 300) == []


@given(st.integers(1, 5000), st.sampled_from([300, 500]))
def test_chunk_spans_give_the_chunk_sequences(length: int, c: int) -> None:
    sequence = ("ACGTTGCA" * 700)[:length]
    chunks = chunk_sequence("s", sequence, c)
    spans = chunk_spans(length, c)
    assert [sequence[first - 1 : last] for first, last in spans] == [k.sequence for k in chunks]
    assert spans[0][0] == 1 and spans[-1][1] == length


@pytest.mark.parametrize("length", [1, 2, 299, 499, 500])
def test_short_sequence_is_one_whole_chunk(length: int) -> None:
    sequence = ("ACGTa" * 200)[:length]
    (chunk,) = chunk_sequence("s", sequence, 500)
    assert (chunk.index, chunk.start, chunk.sequence, chunk.id) == (1, 0, sequence, "s_chunk_1")


def test_empty_sequence_has_no_chunk() -> None:
    assert chunk_sequence("s", "", 500) == []
    assert chunk_count(0, 300) == 0


def test_chunk_ids_sequences_and_case() -> None:
    sequence = "acgt" * 300  # 1200 bp, lower case
    chunks = chunk_sequence("contig_7", sequence, 500)
    assert [c.id for c in chunks] == ["contig_7_chunk_1", "contig_7_chunk_2", "contig_7_chunk_3"]
    assert [c.sequence for c in chunks] == [sequence[0:500], sequence[399:899], sequence[798:1200]]
    assert all(c.record_id == "contig_7" for c in chunks)


def test_invalid_chunk_length() -> None:
    with pytest.raises(ValueError, match="chunk_length"):
        chunk_sequence("s", "ACGT", 0)


lengths = st.integers(min_value=0, max_value=20_000)
chunk_lengths = st.sampled_from([1, 2, 3, 7, 100, 300, 500])


@settings(deadline=None)
@given(lengths, chunk_lengths)
def test_closed_form_matches_the_literal_reference(length: int, c: int) -> None:
    assert chunk_starts(length, c) == _literal_reference_starts(length, c)


@settings(deadline=None)
@given(lengths, chunk_lengths)
def test_chunk_count_is_ceil(length: int, c: int) -> None:
    assert len(chunk_starts(length, c)) == math.ceil(length / c) == chunk_count(length, c)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=20_000), chunk_lengths)
def test_chunks_cover_the_sequence_in_order(length: int, c: int) -> None:
    spans = _spans(length, c)
    assert spans[0][0] == 0
    assert spans[-1][1] == length
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert start < next_start <= end  # strictly advancing, no gap
    assert all(0 < end - start <= c for start, end in spans)
    assert all(end - start == c for start, end in spans[:-1])


@settings(deadline=None)
@given(st.text(alphabet="ACGTNacgtn", max_size=3000), chunk_lengths)
def test_chunk_sequences_are_slices(sequence: str, c: int) -> None:
    chunks = chunk_sequence("r", sequence, c)
    assert [ch.index for ch in chunks] == list(range(1, len(chunks) + 1))
    for chunk in chunks:
        assert chunk.sequence == sequence[chunk.start : chunk.start + c]
    assert set().union(*(range(ch.start, ch.start + len(ch.sequence)) for ch in chunks)) == set(
        range(len(sequence))
    )
