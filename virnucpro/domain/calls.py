"""Calls from frame scores: the original per-chunk call, and one call per input sequence.

Per frame (``prediction_results.txt``): the label is ``virus`` iff P(virus) > P(others), else
``others`` (the original's argmax; a tie is ``others``).

Per chunk (``prediction_results_highestscore.csv``, REFERENCE §5), exactly as the original: the
chunk ID is the frame ID minus its last 2 characters; the chunk is virus iff
``max(P(virus)) >= max(P(others))`` over the chunk's frames (the two maxima may come from different
frames; a tie counts as virus). Rows are sorted by chunk ID with plain string order (what pandas
``groupby`` gives). Chunks without a kept frame have no row.

Per input sequence (``prediction_sequences.tsv``, this project's addition; the original has none).
Every input record gets exactly one row:

1. Each chunk of the record is called with the per-chunk rule above. A chunk with no kept frame is
   *unscored*.
2. A record shorter than 3 bp (no codon) → ``no-call``, reason ``too short (<N> bp)``.
3. Otherwise, if no chunk is scored → ``no-call``, reason ``no stop-free frame in any chunk``.
4. Otherwise ``virus_fraction`` = virus chunks / scored chunks; the call is ``virus`` if
   ``virus_fraction >= 0.5`` (a tie counts as virus, like the chunk rule), else ``non-virus``;
   reason ``<v> of <s> scored chunks called virus``.

Reported with it: ``max_virus_score`` (the highest P(virus) of any frame of the record),
``mean_chunk_virus_score`` (mean over scored chunks of the chunk's highest P(virus)) and
``best_frame_id`` (the frame with the highest P(virus); the first one on ties). Scores are absent
(``None``) for a record without scored chunk.

Thresholds (:mod:`virnucpro.domain.thresholds`) change steps 1 and 4: with ``min_score`` set, a
chunk counts as virus when its chunk score reaches it, and the sequence is virus when
``virus_fraction >= min_virus_fraction``. The default thresholds are the rules above exactly. The
per-chunk table keeps the original rule whatever the thresholds (:func:`call_chunks` takes none).

The sequence's ``virus_score`` is the mean of the chunk scores of its scored chunks, each weighted
by the chunk's length in bp (the last chunk is usually shorter, REFERENCE §2, and counts less); it
lies in [0, 1] and is ``None`` for a no-call. It needs the chunks' coordinates: a
:class:`RecordTrack` has them; :func:`call_sequence` without ``chunk_length`` leaves it ``None``.
It is reported beside the call, not used by it. ``description`` is the FASTA header after the ID.

The *track* of a record (:class:`RecordTrack`, from :func:`build_track`, :func:`track_from_calls`
or :func:`track_of`) is
every chunk in order with its 1-based inclusive bp span and its call (``None`` when unscored); the
per-sequence call (:func:`call_track`) and the viral regions (:mod:`virnucpro.domain.regions`) are
both read from it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from virnucpro.domain.chunking import chunk_spans
from virnucpro.domain.prepare import RecordFrames
from virnucpro.domain.records import FrameScore
from virnucpro.domain.thresholds import DEFAULT_THRESHOLDS, CallThresholds, chunk_score

__all__ = [
    "VIRUS_FRACTION_THRESHOLD",
    "MIN_CALLABLE_LENGTH",
    "FrameLabel",
    "SequenceCallLabel",
    "ChunkCall",
    "CalledChunk",
    "TrackChunk",
    "RecordTrack",
    "SequenceCall",
    "frame_label",
    "chunk_id_of",
    "call_chunks",
    "call_chunk_frames",
    "sorted_chunk_calls",
    "build_track",
    "track_from_calls",
    "track_of",
    "call_track",
    "call_sequence",
    "call_sequences",
]

VIRUS_FRACTION_THRESHOLD = DEFAULT_THRESHOLDS.min_virus_fraction
"""By default a sequence is called virus when at least this fraction of its scored chunks are."""

MIN_CALLABLE_LENGTH = 3
"""Shorter records hold no codon and get ``no-call``."""


class FrameLabel(enum.Enum):
    """The per-frame label of ``prediction_results.txt``."""

    VIRUS = "virus"
    OTHERS = "others"


class SequenceCallLabel(enum.Enum):
    """The per-sequence call of ``prediction_sequences.tsv``."""

    VIRUS = "virus"
    NON_VIRUS = "non-virus"
    NO_CALL = "no-call"


@dataclass(frozen=True, slots=True)
class ChunkCall:
    """The original's per-chunk call (one row of ``prediction_results_highestscore.csv``)."""

    chunk_id: str
    is_virus: bool
    max_virus_score: float
    max_others_score: float
    n_frames: int

    @property
    def score(self) -> float:
        """The chunk score (:func:`~virnucpro.domain.thresholds.chunk_score`), in [0, 1]."""
        return chunk_score(self.max_virus_score, self.max_others_score)


@dataclass(frozen=True, slots=True)
class CalledChunk:
    """A chunk's call and its frame with the highest P(virus) (the first one on ties)."""

    call: ChunkCall
    best_frame_id: str


@dataclass(frozen=True, slots=True)
class TrackChunk:
    """One chunk of a record's track: its place in the record and its call.

    ``start`` and ``end`` are the chunk's first and last base, 1-based and inclusive.
    ``call`` is ``None`` for an unscored chunk (no kept frame); ``best_frame_id`` is the chunk's
    frame with the highest P(virus) (the first one on ties), ``None`` when unscored.
    """

    index: int
    start: int
    end: int
    call: ChunkCall | None
    best_frame_id: str | None = None

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def score(self) -> float | None:
        """The chunk score, ``None`` when unscored."""
        return None if self.call is None else self.call.score


@dataclass(frozen=True, slots=True)
class RecordTrack:
    """Every chunk of one record, in order, with its span and call (module docstring)."""

    record_id: str
    length: int
    chunks: tuple[TrackChunk, ...]
    description: str = ""

    @property
    def scored(self) -> tuple[TrackChunk, ...]:
        """The chunks with a call."""
        return tuple(chunk for chunk in self.chunks if chunk.call is not None)


@dataclass(frozen=True, slots=True)
class SequenceCall:
    """One input record's call (one row of ``prediction_sequences.tsv``).

    ``calibrated_virus_score`` (every scored record) and ``fdr`` (records called virus) are
    ``None`` until a calibration is applied (:func:`virnucpro.domain.calibration.calibrate_calls`).
    """

    record_id: str
    length: int
    call: SequenceCallLabel
    reason: str
    n_chunks: int
    n_scored_chunks: int
    n_virus_chunks: int
    virus_fraction: float | None
    max_virus_score: float | None
    mean_chunk_virus_score: float | None
    best_frame_id: str | None
    virus_score: float | None = None
    calibrated_virus_score: float | None = None
    fdr: float | None = None
    description: str = ""


def frame_label(score: FrameScore) -> FrameLabel:
    """``virus`` iff P(virus) > P(others), as the original's argmax (a tie is ``others``)."""
    return FrameLabel.VIRUS if score.score_virus > score.score_others else FrameLabel.OTHERS


def chunk_id_of(frame_id: str) -> str:
    """The original's ``Modified_ID``: the frame ID minus its last 2 characters (``F1``…``R3``)."""
    return frame_id[:-2]


def call_chunks(scores: Iterable[FrameScore]) -> list[ChunkCall]:
    """The original's per-chunk calls over all frame scores, sorted by chunk ID."""
    return sorted_chunk_calls(call_chunk_frames(scores))


def call_chunk_frames(scores: Iterable[FrameScore]) -> dict[str, CalledChunk]:
    """Every chunk with a frame in ``scores``, called, by chunk ID (in the order first met); the
    frames of a chunk are taken in the order given."""
    grouped: dict[str, list[FrameScore]] = {}
    for score in scores:
        grouped.setdefault(chunk_id_of(score.frame_id), []).append(score)
    return {chunk_id: _called(chunk_id, frames) for chunk_id, frames in grouped.items()}


def sorted_chunk_calls(chunks: Mapping[str, CalledChunk]) -> list[ChunkCall]:
    """The calls of ``chunks`` in the original table's order: by chunk ID, plain string order."""
    return [chunks[chunk_id].call for chunk_id in sorted(chunks)]


def build_track(
    record_id: str,
    length: int,
    chunk_frame_ids: Sequence[Sequence[str]],
    scores: Mapping[str, FrameScore],
    *,
    chunk_length: int,
    description: str = "",
) -> RecordTrack:
    """The track of one record from the kept-frame IDs of each of its chunks and the frame scores.

    ``chunk_frame_ids`` has one entry per chunk of the record, in chunk order (an empty entry for
    a chunk without kept frames); the spans follow from ``length`` and ``chunk_length``
    (:func:`~virnucpro.domain.chunking.chunk_spans`). A wrong number of entries or a listed frame
    without score is a pipeline bug and raises (:class:`ValueError`, :class:`KeyError`).
    """
    spans = chunk_spans(length, chunk_length)
    if len(spans) != len(chunk_frame_ids):
        raise ValueError(
            f"record '{record_id}' ({length} bp) has {len(spans)} chunks of {chunk_length} bp, "
            f"but {len(chunk_frame_ids)} chunk entries were given"
        )
    return RecordTrack(
        record_id=record_id,
        length=length,
        chunks=tuple(
            _track_chunk(k, span, frame_ids, scores)
            for k, (span, frame_ids) in enumerate(zip(spans, chunk_frame_ids), 1)
        ),
        description=description,
    )


def track_from_calls(
    record_id: str,
    length: int,
    chunks: Mapping[str, CalledChunk],
    *,
    chunk_length: int,
    description: str = "",
) -> RecordTrack:
    """The track of one record from the called chunks of the run (:func:`call_chunk_frames`):
    chunk ``k`` of the record is ``<record_id>_chunk_<k>``, unscored when ``chunks`` lacks it;
    the spans follow from ``length`` and ``chunk_length``. The same track as
    :func:`build_track` of the chunks' frames."""
    track_chunks = []
    for k, (start, end) in enumerate(chunk_spans(length, chunk_length), 1):
        called = chunks.get(f"{record_id}_chunk_{k}")
        track_chunks.append(
            TrackChunk(index=k, start=start, end=end, call=None)
            if called is None
            else TrackChunk(index=k, start=start, end=end, call=called.call,
                            best_frame_id=called.best_frame_id)
        )
    return RecordTrack(record_id=record_id, length=length, chunks=tuple(track_chunks),
                       description=description)


def track_of(
    record: RecordFrames, scores: Mapping[str, FrameScore], description: str = ""
) -> RecordTrack:
    """The track of a record of :func:`~virnucpro.domain.prepare.iter_frames` (its real chunks)."""
    return RecordTrack(
        record_id=record.record_id,
        length=record.length,
        chunks=tuple(
            _track_chunk(
                chunk.chunk.index,
                (chunk.chunk.start + 1, chunk.chunk.start + len(chunk.chunk.sequence)),
                [frame.id for frame in chunk.frames],
                scores,
            )
            for chunk in record.chunks
        ),
        description=description,
    )


def call_track(
    track: RecordTrack, thresholds: CallThresholds = DEFAULT_THRESHOLDS
) -> SequenceCall:
    """The per-sequence call of a record from its track (module docstring)."""
    scored = [(c.call, c.best_frame_id, c.length) for c in track.scored]
    return _call(
        track.record_id, track.length, len(track.chunks), scored, thresholds, track.description
    )


def call_sequence(
    record_id: str,
    length: int,
    chunk_frame_ids: Sequence[Sequence[str]],
    scores: Mapping[str, FrameScore],
    *,
    chunk_length: int | None = None,
    thresholds: CallThresholds = DEFAULT_THRESHOLDS,
    description: str = "",
) -> SequenceCall:
    """Call one record from the kept-frame IDs of each of its chunks and the frame scores.

    ``chunk_frame_ids`` has one entry per chunk of the record, in chunk order; a chunk without kept
    frames has an empty entry. Every listed frame must have a score in ``scores`` (a missing one is
    a pipeline bug and raises :class:`KeyError` naming it). With ``chunk_length`` this is
    :func:`call_track` of :func:`build_track`; without it the chunks' spans are unknown and
    ``virus_score`` is ``None``.
    """
    if chunk_length is not None:
        track = build_track(
            record_id, length, chunk_frame_ids, scores,
            chunk_length=chunk_length, description=description,
        )
        return call_track(track, thresholds)
    scored = [
        (call, best, None)
        for call, best in (_chunk_call(ids, scores) for ids in chunk_frame_ids if ids)
    ]
    return _call(record_id, length, len(chunk_frame_ids), scored, thresholds, description)


def call_sequences(
    records: Iterable[RecordFrames],
    scores: Mapping[str, FrameScore],
    *,
    thresholds: CallThresholds = DEFAULT_THRESHOLDS,
    descriptions: Mapping[str, str] | None = None,
) -> Iterator[SequenceCall]:
    """:func:`call_track` of :func:`track_of` for each record of ``iter_frames``.

    ``descriptions`` maps record IDs to their FASTA description (absent: ``""``).
    """
    for record in records:
        description = descriptions.get(record.record_id, "") if descriptions else ""
        yield call_track(track_of(record, scores, description), thresholds)


def _track_chunk(
    index: int,
    span: tuple[int, int],
    frame_ids: Sequence[str],
    scores: Mapping[str, FrameScore],
) -> TrackChunk:
    if not frame_ids:
        return TrackChunk(index=index, start=span[0], end=span[1], call=None)
    call, best = _chunk_call(frame_ids, scores)
    return TrackChunk(index=index, start=span[0], end=span[1], call=call, best_frame_id=best)


def _chunk_call(
    frame_ids: Sequence[str], scores: Mapping[str, FrameScore]
) -> tuple[ChunkCall, str]:
    """The chunk's call and its frame with the highest P(virus) (the first one on ties)."""
    called = _called(chunk_id_of(frame_ids[0]), [_score_of(frame_id, scores) for frame_id in frame_ids])
    return called.call, called.best_frame_id


def _called(chunk_id: str, frame_scores: Sequence[FrameScore]) -> CalledChunk:
    best = frame_scores[0]
    for score in frame_scores[1:]:
        if score.score_virus > best.score_virus:
            best = score
    return CalledChunk(_call_chunk(chunk_id, frame_scores), best.frame_id)


def _call(
    record_id: str,
    length: int,
    n_chunks: int,
    scored: Sequence[tuple[ChunkCall, str, int | None]],
    thresholds: CallThresholds,
    description: str,
) -> SequenceCall:
    """Steps 2–4 of the module docstring over the scored chunks ``(call, best frame, weight)``."""
    if length < MIN_CALLABLE_LENGTH:
        return _no_call(record_id, length, n_chunks, f"too short ({length} bp)", description)
    if not scored:
        return _no_call(
            record_id, length, n_chunks, "no stop-free frame in any chunk", description
        )
    best_call, best_frame_id, _ = scored[0]
    for call, frame_id, _ in scored[1:]:
        if call.max_virus_score > best_call.max_virus_score:
            best_call, best_frame_id = call, frame_id
    n_virus = sum(
        thresholds.chunk_is_virus(call.max_virus_score, call.max_others_score)
        for call, _, _ in scored
    )
    fraction = n_virus / len(scored)
    label = (
        SequenceCallLabel.VIRUS
        if thresholds.sequence_is_virus(fraction)
        else SequenceCallLabel.NON_VIRUS
    )
    return SequenceCall(
        record_id=record_id,
        length=length,
        call=label,
        reason=f"{n_virus} of {len(scored)} scored chunks called virus",
        n_chunks=n_chunks,
        n_scored_chunks=len(scored),
        n_virus_chunks=n_virus,
        virus_fraction=fraction,
        max_virus_score=best_call.max_virus_score,
        mean_chunk_virus_score=math.fsum(c.max_virus_score for c, _, _ in scored) / len(scored),
        best_frame_id=best_frame_id,
        virus_score=_weighted_score(scored),
        description=description,
    )


def _weighted_score(scored: Sequence[tuple[ChunkCall, str, int | None]]) -> float | None:
    """The length-weighted mean chunk score, ``None`` when a weight is unknown."""
    pairs = [(call.score, weight) for call, _, weight in scored if weight is not None]
    if len(pairs) < len(scored):
        return None
    mean = math.fsum(score * weight for score, weight in pairs) / sum(w for _, w in pairs)
    return min(1.0, max(0.0, mean))


def _call_chunk(chunk_id: str, frame_scores: Sequence[FrameScore]) -> ChunkCall:
    max_virus = max(score.score_virus for score in frame_scores)
    max_others = max(score.score_others for score in frame_scores)
    return ChunkCall(
        chunk_id=chunk_id,
        is_virus=max_virus >= max_others,
        max_virus_score=max_virus,
        max_others_score=max_others,
        n_frames=len(frame_scores),
    )


def _score_of(frame_id: str, scores: Mapping[str, FrameScore]) -> FrameScore:
    try:
        return scores[frame_id]
    except KeyError:
        raise KeyError(
            f"no score for frame '{frame_id}'; every kept frame must be scored"
        ) from None


def _no_call(
    record_id: str, length: int, n_chunks: int, reason: str, description: str
) -> SequenceCall:
    return SequenceCall(
        record_id=record_id,
        length=length,
        call=SequenceCallLabel.NO_CALL,
        reason=reason,
        n_chunks=n_chunks,
        n_scored_chunks=0,
        n_virus_chunks=0,
        virus_fraction=None,
        max_virus_score=None,
        mean_chunk_virus_score=None,
        best_frame_id=None,
        description=description,
    )
