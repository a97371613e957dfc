"""Group-by-group tokenisation one group ahead: every sequence exactly once, longest first."""

from __future__ import annotations

import threading

import pytest

from virnucpro.pipeline.encode_ahead import encode_ahead


def _encode(seqs: list[str]) -> list[list[int]]:
    return [[len(s), threading.get_ident()] for s in seqs]


def test_groups_cover_every_sequence_once_longest_first() -> None:
    seqs = ["A" * n for n in (3, 9, 1, 7, 7, 2, 5)]
    got = list(encode_ahead(seqs, _encode, group=3))
    assert [len(indices) for indices, _ in got] == [3, 3, 1]
    order = [i for indices, _ in got for i in indices]
    assert sorted(order) == list(range(len(seqs)))
    assert [len(seqs[i]) for i in order] == [9, 7, 7, 5, 3, 2, 1]
    for indices, rows in got:
        assert [r[0] for r in rows] == [len(seqs[i]) for i in indices]
    main = threading.get_ident()
    assert all(r[1] != main for _, rows in got for r in rows)  # tokenised in the background


def test_one_group_runs_in_this_thread_and_empty_input() -> None:
    seqs = ["AC", "ACGT"]
    (indices, rows), = list(encode_ahead(seqs, _encode, group=None))
    assert indices == [1, 0] and rows[0][1] == threading.get_ident()
    assert list(encode_ahead([], _encode, group=4)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(encode_ahead(seqs, _encode, group=0))
