"""Per-frame labels, the original per-chunk call, and the per-sequence call."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virnucpro.domain.calls import (
    CalledChunk,
    ChunkCall,
    FrameLabel,
    SequenceCall,
    SequenceCallLabel,
    build_track,
    call_chunk_frames,
    call_chunks,
    call_sequence,
    call_sequences,
    chunk_id_of,
    frame_label,
    sorted_chunk_calls,
    track_from_calls,
    track_of,
)
from virnucpro.domain.prepare import iter_frames
from virnucpro.domain.records import FrameScore, SequenceRecord
from virnucpro.domain.thresholds import DEFAULT_THRESHOLDS, CallThresholds


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


# ------------------------------------------------------------------- tracks, scores, thresholds
def test_chunk_call_score_is_the_chunk_score() -> None:
    (call,) = call_chunks(
        [FrameScore("s_chunk_1F1", 0.55, 0.45), FrameScore("s_chunk_1R1", 0.06, 0.94)]
    )
    assert call.score == pytest.approx(0.5 + (0.94 - 0.55) / 2)


def test_track_has_the_chunks_spans_and_calls() -> None:
    track = build_track(
        "r", 1200, [["r_chunk_1F1", "r_chunk_1R1"], [], ["r_chunk_2F2"]], SCORES,
        chunk_length=500, description="a phage",
    )
    assert [(c.index, c.start, c.end, c.length) for c in track.chunks] == [
        (1, 1, 500, 500), (2, 400, 899, 500), (3, 799, 1200, 402)
    ]
    assert track.chunks[1].call is None and track.chunks[1].score is None
    assert track.chunks[0].best_frame_id == "r_chunk_1F1"
    assert track.chunks[0].score == pytest.approx(0.5 + (0.8 - 0.9) / 2)
    assert [c.index for c in track.scored] == [1, 3]
    assert track.description == "a phage"


def test_called_chunks_hold_each_chunks_call_and_best_frame_in_the_order_met() -> None:
    called = call_chunk_frames(
        [_score("b_chunk_1F1", 0.4), _score("a_chunk_1F1", 0.9), _score("b_chunk_1R2", 0.7),
         _score("b_chunk_1R3", 0.7)]
    )
    assert list(called) == ["b_chunk_1", "a_chunk_1"]
    assert called["b_chunk_1"] == CalledChunk(ChunkCall("b_chunk_1", True, 0.7, 0.6, 3), "b_chunk_1R2")
    assert sorted_chunk_calls(called) == [called["a_chunk_1"].call, called["b_chunk_1"].call]


@given(
    st.integers(1, 2400),
    st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["F1", "F2", "R3"]),
                       st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))),
)
def test_track_from_calls_is_build_track_of_the_chunks_frames(
    length: int, rows: list[tuple[int, str, float]]
) -> None:
    """Scored and unscored chunks, ties for the best frame, frames of chunks past the record's."""
    scores = {f"r_chunk_{k}{frame}": _score(f"r_chunk_{k}{frame}", v) for k, frame, v in rows}
    n_chunks = -(-length // 500)
    ids = [[i for i in scores if i[:-2] == f"r_chunk_{k}"] for k in range(1, n_chunks + 1)]
    assert track_from_calls(
        "r", length, call_chunk_frames(scores.values()), chunk_length=500, description="d"
    ) == build_track("r", length, ids, scores, chunk_length=500, description="d")


def test_track_needs_one_entry_per_chunk() -> None:
    with pytest.raises(ValueError, match=r"record 'r' \(1200 bp\) has 3 chunks of 500 bp, but 2"):
        build_track("r", 1200, [[], []], {}, chunk_length=500)


def test_virus_score_is_the_length_weighted_mean_chunk_score() -> None:
    scores = {
        "r_chunk_1F1": FrameScore("r_chunk_1F1", 0.1, 0.9),  # chunk 1: score 0.9, 500 bp
        "r_chunk_2F1": FrameScore("r_chunk_2F1", 0.7, 0.3),  # chunk 2: score 0.3, 251 bp
    }
    call = call_sequence("r", 501, [["r_chunk_1F1"], ["r_chunk_2F1"]], scores, chunk_length=500)
    assert call.virus_score == pytest.approx((500 * 0.9 + 251 * 0.3) / 751)
    assert call.mean_chunk_virus_score == pytest.approx((0.9 + 0.3) / 2)
    assert call.call is SequenceCallLabel.VIRUS  # 1 of 2: a tie is virus


def test_virus_score_skips_unscored_chunks_and_needs_the_chunk_length() -> None:
    ids = [["r_chunk_1F1", "r_chunk_1R1"], ["r_chunk_2F2"], [], ["r_chunk_4F1"], ["r_chunk_5R3"]]
    with_spans = call_sequence("r", 2000, ids, SCORES, chunk_length=400)
    without = call_sequence("r", 2000, ids, SCORES)
    assert without.virus_score is None
    assert dataclasses.replace(with_spans, virus_score=None) == without
    chunk_scores = [0.5 + (0.8 - 0.9) / 2, 0.7, 0.6, 0.95]
    assert with_spans.virus_score == pytest.approx(sum(chunk_scores) / 4)  # all 400 bp long


def test_no_call_has_no_virus_score_but_keeps_the_description() -> None:
    call = call_sequence("r", 1200, [[], [], []], {}, chunk_length=500, description="x y")
    assert call.call is SequenceCallLabel.NO_CALL
    assert (call.virus_score, call.description) == (None, "x y")
    short = call_sequence("r", 2, [[]], {}, chunk_length=300)
    assert short.reason == "too short (2 bp)" and short.virus_score is None


def test_thresholds_change_the_sequence_call() -> None:
    ids = [["r_chunk_1F1", "r_chunk_1R1"], ["r_chunk_2F2"], [], ["r_chunk_4F1"], ["r_chunk_5R3"]]
    # chunk scores 0.45, 0.7, 0.6, 0.95
    default = call_sequence("r", 2000, ids, SCORES, chunk_length=400)
    strict = call_sequence(
        "r", 2000, ids, SCORES, chunk_length=400, thresholds=CallThresholds(min_score=0.65)
    )
    assert (default.n_virus_chunks, default.call) == (3, SequenceCallLabel.VIRUS)
    assert (strict.n_virus_chunks, strict.virus_fraction) == (2, 0.5)
    assert strict.reason == "2 of 4 scored chunks called virus"
    assert strict.call is SequenceCallLabel.VIRUS
    stricter = call_sequence(
        "r", 2000, ids, SCORES, chunk_length=400,
        thresholds=CallThresholds(min_score=0.65, min_virus_fraction=0.6),
    )
    assert stricter.call is SequenceCallLabel.NON_VIRUS
    relaxed = call_sequence(
        "r", 2000, ids, SCORES, chunk_length=400, thresholds=CallThresholds(min_score=0.4)
    )
    assert relaxed.n_virus_chunks == 4
    assert relaxed.virus_score == default.virus_score == strict.virus_score


@given(
    st.lists(
        st.lists(st.tuples(st.floats(0, 1, width=32), st.floats(0, 1, width=32)), max_size=3),
        min_size=1,
        max_size=6,
    )
)
def test_default_thresholds_give_todays_calls(chunks: list[list[tuple[float, float]]]) -> None:
    scores: dict[str, FrameScore] = {}
    ids: list[list[str]] = []
    for k, frames in enumerate(chunks, 1):
        ids.append([])
        for j, (others, virus) in enumerate(frames):
            frame_id = f"r_chunk_{k}F{j + 1}"
            scores[frame_id] = FrameScore(frame_id, others, virus)
            ids[-1].append(frame_id)
    length = 300 * len(chunks)
    call = call_sequence("r", length, ids, scores, chunk_length=300, thresholds=DEFAULT_THRESHOLDS)
    chunk_calls = call_chunks(scores.values())
    n_virus = sum(c.is_virus for c in chunk_calls)
    if not chunk_calls:
        assert call.call is SequenceCallLabel.NO_CALL
    else:
        expected = n_virus / len(chunk_calls) >= 0.5
        assert (call.call is SequenceCallLabel.VIRUS) == expected
        assert call.n_virus_chunks == n_virus
        assert call.virus_score is not None and 0.0 <= call.virus_score <= 1.0


def test_track_of_iter_frames_equals_build_track() -> None:
    records = [
        SequenceRecord("coding", "a virus", "GCT" * 300 + "GC"),
        SequenceRecord("short", "", "ACGTA"),
    ]
    for chunk_length in (300, 500):
        for record in iter_frames(records, chunk_length):
            scores = {f.id: FrameScore(f.id, 0.3, 0.7) for f in record.frames}
            ids = [[f.id for f in chunk.frames] for chunk in record.chunks]
            assert track_of(record, scores, "d") == build_track(
                record.record_id, record.length, ids, scores,
                chunk_length=chunk_length, description="d",
            )


def test_call_sequences_takes_thresholds_and_descriptions() -> None:
    records = [SequenceRecord("coding", "", "GCT" * 300)]
    frames = list(iter_frames(records, 500))
    scores = {f.id: FrameScore(f.id, 0.4, 0.6) for r in frames for f in r.frames}
    (default,) = call_sequences(frames, scores, descriptions={"coding": "phage T4 fragment"})
    assert default.call is SequenceCallLabel.VIRUS
    assert default.description == "phage T4 fragment"
    assert default.virus_score == pytest.approx(0.6)
    (strict,) = call_sequences(frames, scores, thresholds=CallThresholds(min_score=0.65))
    assert strict.call is SequenceCallLabel.NON_VIRUS and strict.description == ""
