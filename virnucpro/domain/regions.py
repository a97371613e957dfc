"""Viral regions of a record from its chunk-score track (``prediction_regions.tsv``).

The rule, for one record with its track (:class:`~virnucpro.domain.calls.RecordTrack`) and its
per-sequence call:

1. A record called ``virus`` is ONE region of kind ``whole``: bases 1 to its length, all its
   scored chunks (the sequence call already says most of it is viral; host flanks of such a
   sequence are for CheckV to trim). A ``no-call`` record has no region.
2. In a record called ``non-virus``, regions of kind ``provirus`` are looked for:

   a. each scored chunk has its chunk score (:func:`~virnucpro.domain.thresholds.chunk_score`);
      an unscored chunk (no stop-free frame) is a gap, it has no score;
   b. optionally the scores are smoothed (``smooth_window`` w, odd, default 1 = none): a scored
      chunk's smoothed score is the median (or mean) of the scores of the scored chunks among
      the w chunks centred on it. Near the record's ends the window shrinks so that it stays
      centred (the first and last chunks keep their own score), so a lone chunk at an end is
      not averaged with a single neighbour; unscored chunks take no part and stay gaps;
   c. a scored chunk is *viral* iff its smoothed score is at least the thresholds' chunk
      threshold (``min_score``, or 0.5 for the original rule: without smoothing, the viral chunks
      are exactly the chunks that count as virus in the sequence call);
   d. a region is a run of viral chunks; a non-viral scored chunk ends it, and so does a run of
      more than ``max_gap`` unscored chunks (default 1: a chunk straddling two genes in different
      frames has no stop-free frame, and one such chunk should not split a prophage). Unscored
      chunks at a region's ends are not part of it;
   e. regions shorter than ``min_length`` bp are dropped (default 1000: a lone viral chunk of
      300 or 500 bp is the commonest false signal in a bacterial contig; raise it, e.g. to 5000,
      to report only prophage-sized regions). Only provirus regions are dropped so: a whole
      region is a sequence called virus, listed however short it is.

Coordinates are 1-based and inclusive in bases of the record: a region runs from the first base
of its first chunk to the last base of its last chunk (chunks overlap and the last one is shorter:
:func:`~virnucpro.domain.chunking.chunk_spans`). Reported per region: ``n_chunks`` (the scored
chunks inside it; bridged gaps are not counted), ``mean_virus_score`` (the mean of their chunk
scores, unsmoothed, each weighted by the chunk's length in bp: the sequence's ``virus_score``
for a whole region) and ``max_virus_score`` (the highest P(virus) of any of their frames, as
``max_virus_score`` in ``prediction_sequences.tsv``).
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from virnucpro.domain.calls import RecordTrack, SequenceCall, SequenceCallLabel, TrackChunk
from virnucpro.domain.thresholds import DEFAULT_THRESHOLDS, CallThresholds
from virnucpro.errors import ConfigError

__all__ = [
    "RegionKind",
    "Smoothing",
    "RegionOptions",
    "DEFAULT_REGION_OPTIONS",
    "Region",
    "smooth_scores",
    "find_regions",
]


class RegionKind(enum.Enum):
    """``whole``: a sequence called virus; ``provirus``: a region inside a non-virus sequence."""

    WHOLE = "whole"
    PROVIRUS = "provirus"


class Smoothing(enum.Enum):
    """How the scores in a smoothing window are combined."""

    MEDIAN = "median"
    MEAN = "mean"


@dataclass(frozen=True, slots=True)
class RegionOptions:
    """The options of the region rule (module docstring, steps b, d and e)."""

    smooth_window: int = 1
    smoothing: Smoothing = Smoothing.MEDIAN
    max_gap: int = 1
    min_length: int = 1000

    def __post_init__(self) -> None:
        if self.smooth_window < 1 or self.smooth_window % 2 == 0:
            raise ConfigError(
                f"smooth_window (--smooth-window) must be an odd number of chunks, at least 1, "
                f"not {self.smooth_window}; 1 turns smoothing off, 3 or 5 smooths."
            )
        if self.max_gap < 0:
            raise ConfigError(
                f"max_gap (--max-gap) must be 0 or more unscored chunks, not {self.max_gap}."
            )
        if self.min_length < 0:
            raise ConfigError(
                f"min_length (--min-region-length) must be 0 or more bp, not {self.min_length}."
            )


DEFAULT_REGION_OPTIONS = RegionOptions()


@dataclass(frozen=True, slots=True)
class Region:
    """One viral region (one row of ``prediction_regions.tsv``); bases 1-based, inclusive."""

    sequence_id: str
    start: int
    end: int
    n_chunks: int
    mean_virus_score: float
    max_virus_score: float
    kind: RegionKind

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def smooth_scores(
    scores: Sequence[float | None], window: int, smoothing: Smoothing = Smoothing.MEDIAN
) -> list[float | None]:
    """Step b: each score replaced by the median (mean) of the scores in a window centred on it.

    ``None`` (an unscored chunk) stays ``None`` and takes no part in its neighbours' windows;
    near the ends the window shrinks to stay centred. ``window=1`` returns the scores unchanged.
    """
    smoothed: list[float | None] = []
    for k, score in enumerate(scores):
        if score is None:
            smoothed.append(None)
            continue
        half = min(window // 2, k, len(scores) - 1 - k)
        near = [s for s in scores[k - half : k + half + 1] if s is not None]
        if smoothing is Smoothing.MEDIAN:
            smoothed.append(statistics.median(near))
        else:
            smoothed.append(math.fsum(near) / len(near))
    return smoothed


def find_regions(
    track: RecordTrack,
    call: SequenceCall,
    thresholds: CallThresholds = DEFAULT_THRESHOLDS,
    options: RegionOptions = DEFAULT_REGION_OPTIONS,
) -> list[Region]:
    """The viral regions of one record, in order along it (module docstring)."""
    if call.record_id != track.record_id:
        raise ValueError(f"the call of '{call.record_id}' is not for record '{track.record_id}'")
    if call.call is SequenceCallLabel.NO_CALL or not track.scored:
        return []
    if call.call is SequenceCallLabel.VIRUS:
        return [_region(track.record_id, 1, track.length, track.scored, RegionKind.WHOLE)]
    regions = []
    for chunks in _viral_runs(track.chunks, thresholds.chunk_threshold, options):
        region = _region(
            track.record_id, chunks[0].start, chunks[-1].end,
            [c for c in chunks if c.call is not None], RegionKind.PROVIRUS,
        )
        if region.length >= options.min_length:
            regions.append(region)
    return regions


def _viral_runs(
    chunks: Sequence[TrackChunk], threshold: float, options: RegionOptions
) -> list[list[TrackChunk]]:
    """Steps c and d: runs of viral chunks (with the gaps they bridge), first to last viral."""
    smoothed = smooth_scores([c.score for c in chunks], options.smooth_window, options.smoothing)
    runs: list[list[TrackChunk]] = []
    current: list[TrackChunk] = []
    gap: list[TrackChunk] = []
    for chunk, score in zip(chunks, smoothed):
        if score is None:
            if current:
                gap.append(chunk)
                if len(gap) > options.max_gap:
                    runs.append(current)
                    current, gap = [], []
        elif score >= threshold:
            current.extend(gap)
            current.append(chunk)
            gap = []
        elif current:
            runs.append(current)
            current, gap = [], []
    if current:
        runs.append(current)
    return runs


def _region(
    record_id: str, start: int, end: int, scored: Sequence[TrackChunk], kind: RegionKind
) -> Region:
    calls = [c.call for c in scored if c.call is not None]
    weights = [c.length for c in scored]
    mean = math.fsum(w * c.score for w, c in zip(weights, calls)) / sum(weights)
    return Region(
        sequence_id=record_id,
        start=start,
        end=end,
        n_chunks=len(calls),
        mean_virus_score=min(1.0, max(0.0, mean)),
        max_virus_score=max(c.max_virus_score for c in calls),
        kind=kind,
    )
