"""Viral regions from constructed chunk-score tracks: edges, gaps, both chunk lengths, options."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virnucpro.domain.calls import RecordTrack, SequenceCallLabel, build_track, call_track
from virnucpro.domain.chunking import chunk_count, chunk_spans
from virnucpro.domain.records import FrameScore
from virnucpro.domain.regions import (
    Region,
    RegionKind,
    RegionOptions,
    Smoothing,
    find_regions,
    smooth_scores,
)
from virnucpro.domain.thresholds import DEFAULT_THRESHOLDS, CallThresholds
from virnucpro.errors import ConfigError

HI, LO = 0.875, 0.125  # exact binary fractions: a one-frame chunk's score is its P(virus)
ALL = RegionOptions(min_length=0)


def _track(scores: list[float | None], length: int, chunk_length: int) -> RecordTrack:
    """A record whose chunk k has one frame with P(virus) = scores[k] (None: unscored)."""
    assert len(scores) == chunk_count(length, chunk_length)
    frames: dict[str, FrameScore] = {}
    ids: list[list[str]] = []
    for k, score in enumerate(scores, 1):
        ids.append([] if score is None else [f"r_chunk_{k}F1"])
        if score is not None:
            frames[f"r_chunk_{k}F1"] = FrameScore(f"r_chunk_{k}F1", 1.0 - score, score)
    return build_track("r", length, ids, frames, chunk_length=chunk_length)


def _regions(
    scores: list[float | None],
    length: int,
    chunk_length: int,
    options: RegionOptions = ALL,
    thresholds: CallThresholds = DEFAULT_THRESHOLDS,
) -> list[tuple[int, int, int, RegionKind]]:
    track = _track(scores, length, chunk_length)
    regions = find_regions(track, call_track(track, thresholds), thresholds, options)
    return [(r.start, r.end, r.n_chunks, r.kind) for r in regions]


P = RegionKind.PROVIRUS


# ----------------------------------------------------------------------------- coordinates
def test_chunk_spans_used_for_both_chunk_lengths() -> None:
    # 2000 bp at 300: 7 chunks 285 bp apart, the last one 290 bp long
    assert chunk_spans(2000, 300) == [
        (1, 300), (286, 585), (571, 870), (856, 1155), (1141, 1440), (1426, 1725), (1711, 2000)
    ]
    assert _regions([LO, HI, HI, LO, LO, LO, LO], 2000, 300) == [(286, 870, 2, P)]
    assert _regions([LO, LO, LO, LO, LO, HI, HI], 2000, 300) == [(1426, 2000, 2, P)]
    # 1200 bp at 500: spans (1,500) (400,899) (799,1200)
    assert _regions([LO, HI, LO], 1200, 500) == [(400, 899, 1, P)]


def test_regions_at_the_first_and_the_last_chunk() -> None:
    # 3000 bp at 300: 10 chunks of exactly 300 bp
    scores = [HI, HI, LO, LO, LO, LO, LO, LO, HI, HI]
    assert _regions(scores, 3000, 300) == [(1, 600, 2, P), (2401, 3000, 2, P)]
    # the last chunk is shorter and overlaps: 2601 bp at 500 (spans end at 2601)
    spans = chunk_spans(2601, 500)
    scores = [LO] * (len(spans) - 1) + [HI]
    assert _regions(scores, 2601, 500) == [(spans[-1][0], 2601, 1, P)]


# ------------------------------------------------------------------------------------ gaps
def test_one_unscored_chunk_is_bridged_by_default() -> None:
    scores = [LO, HI, None, HI, LO, LO, LO, LO, LO, LO]
    assert _regions(scores, 3000, 300) == [(301, 1200, 2, P)]


def test_more_unscored_chunks_than_max_gap_split_the_region() -> None:
    scores = [LO, HI, None, None, HI, LO, LO, LO, LO, LO]
    assert _regions(scores, 3000, 300) == [(301, 600, 1, P), (1201, 1500, 1, P)]
    two = RegionOptions(max_gap=2, min_length=0)
    assert _regions(scores, 3000, 300, two) == [(301, 1500, 2, P)]
    zero = RegionOptions(max_gap=0, min_length=0)
    assert _regions([LO, HI, None, HI, LO, LO, LO, LO, LO, LO], 3000, 300, zero) == [
        (301, 600, 1, P),
        (901, 1200, 1, P),
    ]


def test_unscored_chunks_at_a_regions_ends_are_not_part_of_it() -> None:
    scores = [None, HI, HI, None, LO, LO, LO, LO, LO, None]
    assert _regions(scores, 3000, 300) == [(301, 900, 2, P)]


def test_a_non_viral_chunk_ends_a_region_even_with_gaps_allowed() -> None:
    scores = [HI, LO, HI, LO, LO, LO, LO, LO, LO, LO]
    assert _regions(scores, 3000, 300, RegionOptions(max_gap=5, min_length=0)) == [
        (1, 300, 1, P),
        (601, 900, 1, P),
    ]


# --------------------------------------------------------------------------------- options
def test_min_length_drops_short_provirus_regions() -> None:
    scores = [HI, LO, LO, HI, HI, HI, LO, LO, LO, LO]
    assert _regions(scores, 3000, 300, RegionOptions()) == []  # 900 bp < 1000 bp
    assert _regions(scores, 3000, 300, RegionOptions(min_length=900)) == [(901, 1800, 3, P)]
    assert _regions(scores, 3000, 300, RegionOptions(min_length=901)) == []
    assert _regions(scores, 3000, 300, RegionOptions(min_length=300)) == [
        (1, 300, 1, P),
        (901, 1800, 3, P),
    ]


def test_median_smoothing_removes_a_spike_and_fills_a_dip() -> None:
    scores = [LO, HI, LO, LO, HI, HI, LO, HI, HI, LO, LO, LO]
    assert _regions(scores, 3600, 300) == [(301, 600, 1, P), (1201, 1800, 2, P), (2101, 2700, 2, P)]
    smooth = RegionOptions(smooth_window=3, min_length=0)
    assert _regions(scores, 3600, 300, smooth) == [(1201, 2700, 5, P)]


def test_mean_smoothing() -> None:
    assert smooth_scores([0.0, 1.0, 0.25, 0.5], 3, Smoothing.MEAN) == [
        0.0, pytest.approx(1.25 / 3), pytest.approx(1.75 / 3), 0.5
    ]
    assert smooth_scores([0.0, 1.0, 0.25, 0.5], 3, Smoothing.MEDIAN) == [0.0, 0.25, 0.5, 0.5]


def test_the_window_shrinks_near_the_ends_to_stay_centred() -> None:
    assert smooth_scores([0.1, 0.9, 0.2, 0.8, 0.3], 5) == [0.1, 0.2, 0.3, 0.3, 0.3]
    assert smooth_scores([0.25, 0.75], 3) == [0.25, 0.75]


def test_smoothing_skips_unscored_chunks_and_keeps_them_gaps() -> None:
    assert smooth_scores([0.2, None, 0.8, 0.6, 0.4], 3) == [0.2, None, 0.7, 0.6, 0.4]
    assert smooth_scores([None, None], 5) == [None, None]
    assert smooth_scores([0.3, None, 0.9], 1) == [0.3, None, 0.9]


def test_min_score_is_the_viral_chunk_threshold() -> None:
    scores = [0.25, 0.625, 0.75, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
    assert _regions(scores, 3000, 300) == [(301, 900, 2, P)]
    strict = CallThresholds(min_score=0.7)
    assert _regions(scores, 3000, 300, thresholds=strict) == [(601, 900, 1, P)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(smooth_window=2), r"smooth_window \(--smooth-window\) must be an odd number"),
        (dict(smooth_window=0), "must be an odd number of chunks, at least 1, not 0"),
        (dict(max_gap=-1), r"max_gap \(--max-gap\) must be 0 or more"),
        (dict(min_length=-5), r"min_length \(--min-region-length\) must be 0 or more bp"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegionOptions(**options)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- kinds
def test_a_sequence_called_virus_is_one_whole_region() -> None:
    track = _track([HI, LO, HI, None, HI, LO, HI, HI, LO, HI], 3000, 300)
    call = call_track(track)
    assert call.call is SequenceCallLabel.VIRUS
    (region,) = find_regions(track, call, options=RegionOptions(min_length=5000))
    assert call.virus_score is not None and call.max_virus_score is not None
    assert region == Region(
        "r", 1, 3000, 9, call.virus_score, call.max_virus_score, RegionKind.WHOLE
    )
    assert region.length == 3000


def test_mean_score_is_length_weighted_over_the_regions_scored_chunks() -> None:
    # 801 bp at 500: spans (1,500) and (401,801): 500 and 401 bp
    track = _track([0.75, 0.625], 801, 500)
    (region,) = find_regions(track, call_track(track))
    assert region.mean_virus_score == pytest.approx((500 * 0.75 + 401 * 0.625) / 901)
    assert region.max_virus_score == 0.75


def test_record_without_scored_chunk_has_no_region() -> None:
    track = _track([None, None, None], 1200, 500)
    assert call_track(track).call is SequenceCallLabel.NO_CALL
    assert find_regions(track, call_track(track), options=ALL) == []


@pytest.mark.parametrize("chunk_length", [300, 500])
def test_record_of_one_chunk(chunk_length: int) -> None:
    virus = _track([HI], 280, chunk_length)
    assert _regions([HI], 280, chunk_length, RegionOptions()) == [(1, 280, 1, RegionKind.WHOLE)]
    assert find_regions(virus, call_track(virus))[0].mean_virus_score == HI
    assert _regions([LO], 280, chunk_length) == []
    assert _regions([None], 280, chunk_length) == []


def test_the_call_must_be_the_records() -> None:
    track = _track([HI], 280, 300)
    other = build_track("q", 280, [[]], {}, chunk_length=300)
    with pytest.raises(ValueError, match="the call of 'q' is not for record 'r'"):
        find_regions(track, call_track(other))


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.lists(st.tuples(st.floats(0, 1, width=32), st.floats(0, 1, width=32)), min_size=1,
                     max_size=3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_unsmoothed_viral_chunks_are_the_chunks_counted_virus(
    chunks: list[list[tuple[float, float]] | None],
) -> None:
    frames: dict[str, FrameScore] = {}
    ids: list[list[str]] = []
    for k, frame_scores in enumerate(chunks, 1):
        ids.append([])
        for j, (others, virus) in enumerate(frame_scores or []):
            frames[f"r_chunk_{k}F{j + 1}"] = FrameScore(f"r_chunk_{k}F{j + 1}", others, virus)
            ids[-1].append(f"r_chunk_{k}F{j + 1}")
    track = build_track("r", 300 * len(chunks), ids, frames, chunk_length=300)
    call = call_track(track)
    if call.call is not SequenceCallLabel.NON_VIRUS:
        return
    in_regions = {
        k
        for region in find_regions(track, call, options=RegionOptions(max_gap=0, min_length=0))
        for k, (start, end) in enumerate(chunk_spans(track.length, 300))
        if start >= region.start and end <= region.end and track.chunks[k].call is not None
    }
    counted = {k for k, c in enumerate(track.chunks) if c.call is not None and c.call.is_virus}
    assert in_regions == counted
