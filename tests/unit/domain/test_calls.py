"""Per-frame labels, the original per-chunk call, and the per-sequence call."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virnucpro.domain.calls import (
    ChunkCall,
    FrameLabel,
    SequenceCall,
    SequenceCallLabel,
    call_chunks,
    call_sequence,
    call_sequences,
    chunk_id_of,
    frame_label,
)
from virnucpro.domain.prepare import iter_frames
from virnucpro.domain.records import FrameScore, SequenceRecord


def _score(frame_id: str, virus: float, others: float | None = None) -> FrameScore:
    return FrameScore(frame_id, 1.0 - virus if others is None else others, virus)


# ------------------------------------------------------------------------------------- per frame
def test_frame_label_is_virus_only_when_strictly_greater() -> None:
    assert frame_label(_score("a_chunk_1F1", 0.6)) is FrameLabel.VIRUS
    assert frame_label(_score("a_chunk_1F1", 0.4)) is FrameLabel.OTHERS
    assert frame_label(_score("a_chunk_1F1", 0.5, 0.5)) is FrameLabel.OTHERS


# ------------------------------------------------------------------------------------- per chunk
def test_chunk_id_is_frame_id_minus_two_characters() -> None:
    assert chunk_id_of("contig_7_chunk_12R3") == "contig_7_chunk_12"


def test_chunk_call_compares_maxima_from_different_frames() -> None:
    scores = [
        FrameScore("s_chunk_1F1", 0.70, 0.30),  # max others 0.70
        FrameScore("s_chunk_1R2", 0.25, 0.75),  # max virus 0.75
        FrameScore("s_chunk_2F1", 0.90, 0.10),
        FrameScore("s_chunk_2F2", 0.80, 0.20),
    ]
    assert call_chunks(scores) == [
        ChunkCall("s_chunk_1", True, 0.75, 0.70, 2),
        ChunkCall("s_chunk_2", False, 0.20, 0.90, 2),
    ]


def test_chunk_tie_counts_as_virus() -> None:
    (call,) = call_chunks([FrameScore("s_chunk_1F1", 0.5, 0.5)])
    assert call.is_virus


def test_chunks_sorted_lexicographically_like_pandas() -> None:
    ids = ["b_chunk_2F1", "b_chunk_10F1", "a_chunk_1R1", "B_chunk_1F1", "b_chunk_1F3"]
    calls = call_chunks(_score(i, 0.6) for i in ids)
    assert [c.chunk_id for c in calls] == [
        "B_chunk_1",
        "a_chunk_1",
        "b_chunk_1",
        "b_chunk_10",
        "b_chunk_2",
    ]


@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["F1", "F2", "R3"]), st.floats(0, 1))))
def test_chunk_calls_property(rows: list[tuple[int, str, float]]) -> None:
    scores = [_score(f"r_chunk_{k}{suffix}", v) for k, suffix, v in rows]
    calls = call_chunks(scores)
    assert [c.chunk_id for c in calls] == sorted({s.frame_id[:-2] for s in scores})
    for call in calls:
        mine = [s for s in scores if s.frame_id[:-2] == call.chunk_id]
        assert call.is_virus == (
            max(s.score_virus for s in mine) >= max(s.score_others for s in mine)
        )


# ---------------------------------------------------------------------------------- per sequence
SCORES = {
    s.frame_id: s
    for s in [
        FrameScore("r_chunk_1F1", 0.2, 0.8),  # chunk 1: virus
        FrameScore("r_chunk_1R1", 0.9, 0.1),  # max others 0.9 > 0.8: chunk 1 is others
        FrameScore("r_chunk_2F2", 0.3, 0.7),  # chunk 2: virus
        FrameScore("r_chunk_4F1", 0.4, 0.6),  # chunk 4: virus
        FrameScore("r_chunk_5R3", 0.05, 0.95),  # chunk 5: virus (best frame)
    ]
}


def test_sequence_call_virus_majority() -> None:
    call = call_sequence(
        "r",
        2000,
        [["r_chunk_1F1", "r_chunk_1R1"], ["r_chunk_2F2"], [], ["r_chunk_4F1"], ["r_chunk_5R3"]],
        SCORES,
    )
    assert call == SequenceCall(
        record_id="r",
        length=2000,
        call=SequenceCallLabel.VIRUS,
        reason="3 of 4 scored chunks called virus",
        n_chunks=5,
        n_scored_chunks=4,
        n_virus_chunks=3,
        virus_fraction=0.75,
        max_virus_score=0.95,
        mean_chunk_virus_score=pytest.approx((0.8 + 0.7 + 0.6 + 0.95) / 4),
        best_frame_id="r_chunk_5R3",
    )


def test_sequence_call_half_is_virus_and_less_is_non_virus() -> None:
    half = call_sequence("r", 900, [["r_chunk_1F1", "r_chunk_1R1"], ["r_chunk_2F2"]], SCORES)
    assert (half.call, half.virus_fraction) == (SequenceCallLabel.VIRUS, 0.5)
    minority = call_sequence("r", 500, [["r_chunk_1F1", "r_chunk_1R1"]], SCORES)
    assert minority.call is SequenceCallLabel.NON_VIRUS
    assert minority.reason == "0 of 1 scored chunks called virus"
    assert minority.max_virus_score == 0.8
    assert minority.best_frame_id == "r_chunk_1F1"


def test_sequence_call_best_frame_first_on_ties() -> None:
    scores = {i: FrameScore(i, 0.3, 0.7) for i in ("r_chunk_1F2", "r_chunk_1R1")}
    call = call_sequence("r", 400, [["r_chunk_1F2", "r_chunk_1R1"]], scores)
    assert call.best_frame_id == "r_chunk_1F2"


@pytest.mark.parametrize("length", [0, 1, 2])
def test_too_short_is_no_call(length: int) -> None:
    call = call_sequence("tiny", length, [[]] if length else [], {})
    assert (call.call, call.reason) == (SequenceCallLabel.NO_CALL, f"too short ({length} bp)")
    assert call.virus_fraction is call.max_virus_score is call.best_frame_id is None


def test_no_stop_free_frame_is_no_call() -> None:
    call = call_sequence("r", 1200, [[], [], []], {})
    assert call.call is SequenceCallLabel.NO_CALL
    assert call.reason == "no stop-free frame in any chunk"
    assert (call.n_chunks, call.n_scored_chunks, call.n_virus_chunks) == (3, 0, 0)
    assert call.mean_chunk_virus_score is None


def test_missing_score_is_a_bug_that_names_the_frame() -> None:
    with pytest.raises(KeyError, match="r_chunk_9F1"):
        call_sequence("r", 600, [["r_chunk_9F1"]], SCORES)


def test_call_sequences_from_iter_frames_gives_one_row_per_record() -> None:
    records = [
        SequenceRecord("coding", "", "GCT" * 300),  # 900 bp: 2 chunks, frames in both
        SequenceRecord("stops", "", "TTAA" * 150),  # a stop in all six frames
        SequenceRecord("short", "", "AC"),
    ]
    frames = list(iter_frames(records, 500))
    scores = {f.id: FrameScore(f.id, 0.4, 0.6) for r in frames for f in r.frames}
    calls = list(call_sequences(frames, scores))
    assert [c.record_id for c in calls] == ["coding", "stops", "short"]
    assert calls[0].call is SequenceCallLabel.VIRUS and calls[0].n_scored_chunks == 2
    assert calls[1].call is SequenceCallLabel.NO_CALL and calls[1].n_chunks == 2
    assert calls[1].reason == "no stop-free frame in any chunk"
    assert calls[2].call is SequenceCallLabel.NO_CALL and calls[2].reason == "too short (2 bp)"
