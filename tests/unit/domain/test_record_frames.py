"""The whole-record translation gives exactly the chunk-by-chunk reference's chunks and frames."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro.domain import prepare
from virnucpro.domain.chunking import chunk_sequence
from virnucpro.domain.prepare import iter_frames
from virnucpro.domain.record_frames import record_chunk_frames, records_chunk_frames
from virnucpro.domain.records import SequenceRecord
from virnucpro.domain.translation import six_frames


def _reference(record_id: str, sequence: str, chunk_length: int) -> list:
    return [
        (chunk, tuple(six_frames(chunk)))
        for chunk in chunk_sequence(record_id, sequence, chunk_length)
    ]


@settings(deadline=None, max_examples=400)
@given(
    sequence=st.text(alphabet="ACGTACGTACGTACGTNRYUacgt", max_size=200),
    chunk_length=st.sampled_from([1, 2, 3, 4, 5, 7, 30, 61]),
)
def test_one_record_matches_the_chunk_by_chunk_reference(sequence: str, chunk_length: int) -> None:
    assert record_chunk_frames("rec", sequence, chunk_length) == _reference(
        "rec", sequence, chunk_length
    )


def test_a_batch_of_records_never_reads_a_codon_across_two_records() -> None:
    # Stop-free frames end exactly at a record's end; the next record starts with stop codons
    # and ambiguous bases, which a codon read across the boundary would pick up.
    rng = random.Random(7)
    records = []
    for i in range(300):
        length = rng.choice([0, 1, 2, 3, 4, 5, 6, 299, 300, 301, 500, 501, 1499, 2000])
        alphabet = "ACGT" * 8 + "NRYacgt" if i % 2 else "GC"
        body = "".join(rng.choice(alphabet) for _ in range(length))
        records.append((f"r{i}", ("TAA" + body)[:length] if i % 3 == 0 else body))
    for chunk_length in (3, 300, 500):
        expected = [_reference(rid, seq, chunk_length) for rid, seq in records]
        assert records_chunk_frames(records, chunk_length) == expected


def test_dna_is_cut_at_the_chunk_end_when_the_quirk_reaches_past_it() -> None:
    # 9 bases: F1 has 3 codons, so its DNA would be 10 bases; the chunk has 9.
    (chunk, frames), = record_chunk_frames("r", "GCTGCTGCT", 9)
    forward_one = frames[0]
    assert forward_one.id == "r_chunk_1F1"
    assert forward_one.dna == "GCTGCTGCT" and forward_one.protein == "AAA"
    # The record continues past a chunk end: the next base must not leak into the chunk's DNA.
    _, first_frames = record_chunk_frames("r", "GCTGCTGCTA" * 2, 9)[0]
    assert first_frames[0].id == "r_chunk_1F1" and first_frames[0].dna == "GCTGCTGCT"


@pytest.mark.parametrize("batch_bases", [1, 7, 1000, 1 << 20])
def test_iter_frames_groups_records_without_changing_the_frames(
    monkeypatch: pytest.MonkeyPatch, batch_bases: int
) -> None:
    rng = random.Random(batch_bases)
    records = [
        SequenceRecord(f"s{i}", "", "".join(rng.choice("ACGTN") for _ in range(rng.randrange(1, 900))))
        for i in range(40)
    ]
    monkeypatch.setattr(prepare, "BATCH_BASES", batch_bases)
    got = list(iter_frames(records, 300))
    assert [r.record_id for r in got] == [r.id for r in records]
    for record, frames in zip(records, got, strict=True):
        expected = _reference(record.id, record.sequence, 300)
        assert [(c.chunk, c.frames) for c in frames.chunks] == expected
        assert frames.length == len(record.sequence)


def test_a_reader_error_surfaces_through_iter_frames() -> None:
    def records():
        yield SequenceRecord("a", "", "GCT" * 10)
        raise RuntimeError("the reader failed after the first record")

    frames = iter_frames(records(), 500)
    with pytest.raises(RuntimeError, match="after the first record"):
        next(frames)


def test_non_ascii_records_give_the_reference_frames_beside_ascii_ones() -> None:
    # "ß".upper() is "SS": upper-casing changes the length, so such a record must not be
    # placed in the joined strands (the records after it would shift).
    records = [("a", "GCTGCTGCT" * 5), ("b", "GCTGCßTGCTGCT" * 4), ("c", "GCTGCTGÇTGCTA" * 4),
               ("d", "ATGGCTGCT" * 6)]
    expected = [_reference(rid, seq, 30) for rid, seq in records]
    assert records_chunk_frames(records, 30) == expected
