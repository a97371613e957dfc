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
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from virnucpro.domain.prepare import RecordFrames
from virnucpro.domain.records import FrameScore

__all__ = [
    "VIRUS_FRACTION_THRESHOLD",
    "MIN_CALLABLE_LENGTH",
    "FrameLabel",
    "SequenceCallLabel",
    "ChunkCall",
    "SequenceCall",
    "frame_label",
    "chunk_id_of",
    "call_chunks",
    "call_sequence",
    "call_sequences",
]

VIRUS_FRACTION_THRESHOLD = 0.5
"""A sequence is called virus when at least this fraction of its scored chunks are virus."""

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


@dataclass(frozen=True, slots=True)
class SequenceCall:
    """One input record's call (one row of ``prediction_sequences.tsv``)."""

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


def frame_label(score: FrameScore) -> FrameLabel:
    """``virus`` iff P(virus) > P(others), as the original's argmax (a tie is ``others``)."""
    return FrameLabel.VIRUS if score.score_virus > score.score_others else FrameLabel.OTHERS


def chunk_id_of(frame_id: str) -> str:
    """The original's ``Modified_ID``: the frame ID minus its last 2 characters (``F1``…``R3``)."""
    return frame_id[:-2]


def call_chunks(scores: Iterable[FrameScore]) -> list[ChunkCall]:
    """The original's per-chunk calls over all frame scores, sorted by chunk ID."""
    grouped: dict[str, list[FrameScore]] = {}
    for score in scores:
        grouped.setdefault(chunk_id_of(score.frame_id), []).append(score)
    return [_call_chunk(chunk_id, grouped[chunk_id]) for chunk_id in sorted(grouped)]


def call_sequence(
    record_id: str,
    length: int,
    chunk_frame_ids: Sequence[Sequence[str]],
    scores: Mapping[str, FrameScore],
) -> SequenceCall:
    """Call one record from the kept-frame IDs of each of its chunks and the frame scores.

    ``chunk_frame_ids`` has one entry per chunk of the record, in chunk order; a chunk without kept
    frames has an empty entry. Every listed frame must have a score in ``scores`` (a missing one is
    a pipeline bug and raises :class:`KeyError` naming it).
    """
    n_chunks = len(chunk_frame_ids)
    scored: list[ChunkCall] = []
    best: FrameScore | None = None
    for frame_ids in chunk_frame_ids:
        if not frame_ids:
            continue
        frame_scores = [_score_of(frame_id, scores) for frame_id in frame_ids]
        scored.append(_call_chunk(chunk_id_of(frame_ids[0]), frame_scores))
        for score in frame_scores:
            if best is None or score.score_virus > best.score_virus:
                best = score
    if length < MIN_CALLABLE_LENGTH:
        return _no_call(record_id, length, n_chunks, f"too short ({length} bp)")
    if best is None:
        return _no_call(record_id, length, n_chunks, "no stop-free frame in any chunk")
    n_virus = sum(chunk.is_virus for chunk in scored)
    fraction = n_virus / len(scored)
    label = (
        SequenceCallLabel.VIRUS
        if fraction >= VIRUS_FRACTION_THRESHOLD
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
        max_virus_score=best.score_virus,
        mean_chunk_virus_score=math.fsum(c.max_virus_score for c in scored) / len(scored),
        best_frame_id=best.frame_id,
    )


def call_sequences(
    records: Iterable[RecordFrames], scores: Mapping[str, FrameScore]
) -> Iterator[SequenceCall]:
    """:func:`call_sequence` for each record of :func:`~virnucpro.domain.prepare.iter_frames`."""
    for record in records:
        chunk_frame_ids = [[frame.id for frame in chunk.frames] for chunk in record.chunks]
        yield call_sequence(record.record_id, record.length, chunk_frame_ids, scores)


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


def _no_call(record_id: str, length: int, n_chunks: int, reason: str) -> SequenceCall:
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
    )
