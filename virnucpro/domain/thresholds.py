"""The chunk score, and the thresholds that turn chunk scores into calls (presets included).

The chunk score
---------------
The original calls a chunk virus iff ``max P(virus) >= max P(others)`` over its stop-free frames
(REFERENCE §5); the two maxima may come from different frames. This project puts that rule on one
scale in [0, 1], the *chunk score*::

    score = 0.5 + (max P(virus) - max P(others)) / 2

- ``score >= 0.5`` exactly when the original calls the chunk virus (a tie scores 0.5; the
  computation keeps this exact for any input, see :func:`chunk_score`);
- for a chunk with one frame, the score is that frame's P(virus) (P(others) = 1 − P(virus));
- with several frames it is the midpoint between the highest and the lowest P(virus) of the
  frames (max P(others) = 1 − min P(virus)): one frame that looks very viral does not make the
  chunk viral if another frame of the same chunk looks very non-viral, as in the original.

Thresholds (:class:`CallThresholds`)
------------------------------------
- ``min_score``: the chunk score a chunk needs to count as virus. ``None`` (the default) is the
  original rule itself, evaluated as the original does (``max P(virus) >= max P(others)``), so the
  default calls are today's calls bit for bit; it is the same as ``0.5`` on the chunk score.
- ``min_virus_fraction``: the fraction of its scored chunks that must count as virus for a
  sequence to be called virus (default 0.5, today's majority rule; a tie counts as virus).

They apply to the per-sequence call (``prediction_sequences.tsv``), the viral regions
(``prediction_regions.tsv``) and what follows from them (``virus.fna``, ``provirus.fna``). The
per-chunk table ``prediction_results_highestscore.csv`` is the original's format and always uses
the original rule, whatever the thresholds.

Presets (:data:`PRESETS`)
-------------------------
============  =========  ==================  ===============================================
preset        min_score  min_virus_fraction  for
============  =========  ==================  ===============================================
relaxed       0.4        0.25                screening, when every candidate is checked
                                             downstream (CheckV, annotation): a chunk counts
                                             when its best others frame leads its best virus
                                             frame by at most 0.2, and a quarter of the chunks
                                             suffices (a short contig that is partly viral)
default       original   0.5                 today's calls, unchanged
conservative  0.7        0.75                reporting without further checks: a chunk counts
                                             only when its best virus frame leads its best
                                             others frame by at least 0.4, and three quarters
                                             of the chunks must agree
============  =========  ==================  ===============================================

The presets are nested: every chunk and every sequence that ``conservative`` calls virus,
``default`` calls virus, and every one ``default`` calls virus, ``relaxed`` does too. Their numbers
are points on the score scale chosen for that order, not values tuned on a labelled benchmark; to
choose a threshold from data, label a run and use the calibration (FDR column). An option given
explicitly overrides the preset's value (:func:`resolve_thresholds`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from virnucpro.errors import ConfigError

__all__ = [
    "ORIGINAL_CHUNK_SCORE",
    "Preset",
    "CallThresholds",
    "DEFAULT_THRESHOLDS",
    "PRESETS",
    "chunk_score",
    "resolve_thresholds",
]

ORIGINAL_CHUNK_SCORE = 0.5
"""The chunk score at which the original rule calls a chunk virus (a tie counts as virus)."""


class Preset(enum.Enum):
    """A named set of thresholds (``--preset``)."""

    RELAXED = "relaxed"
    DEFAULT = "default"
    CONSERVATIVE = "conservative"


def chunk_score(max_virus: float, max_others: float) -> float:
    """``0.5 + (max_virus - max_others) / 2``: the chunk score (module docstring).

    ``chunk_score(v, o) >= 0.5`` holds exactly when ``v >= o``, for every pair of floats: the
    sign of a floating-point difference is exact, and the one case where rounding could bring a
    negative difference up to 0.5 (``0 < o - v < 2**-53``) is moved to the float just below 0.5.
    """
    score = ORIGINAL_CHUNK_SCORE + (max_virus - max_others) / 2
    if max_virus < max_others and score >= ORIGINAL_CHUNK_SCORE:
        score = math.nextafter(ORIGINAL_CHUNK_SCORE, 0.0)
    return score


@dataclass(frozen=True, slots=True)
class CallThresholds:
    """When a chunk counts as virus, and when a sequence is called virus (module docstring)."""

    min_score: float | None = None
    min_virus_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(
                f"min_score (--min-score) must be a chunk score between 0 and 1, not "
                f"{self.min_score}; e.g. 0.7 for fewer, surer calls, or leave it unset for the "
                "original rule."
            )
        if not 0.0 < self.min_virus_fraction <= 1.0:
            raise ConfigError(
                f"min_virus_fraction (--min-virus-fraction) must be above 0 and at most 1, not "
                f"{self.min_virus_fraction}; e.g. 0.5 (a majority of the scored chunks)."
            )

    @property
    def chunk_threshold(self) -> float:
        """The chunk score a chunk needs: ``min_score``, or 0.5 for the original rule."""
        return ORIGINAL_CHUNK_SCORE if self.min_score is None else self.min_score

    @property
    def is_original(self) -> bool:
        """True for today's rules (the ``default`` preset)."""
        return self == DEFAULT_THRESHOLDS

    def chunk_is_virus(self, max_virus: float, max_others: float) -> bool:
        """Whether a chunk with these frame maxima counts as virus."""
        if self.min_score is None:
            return max_virus >= max_others
        return chunk_score(max_virus, max_others) >= self.min_score

    def sequence_is_virus(self, virus_fraction: float) -> bool:
        """Whether a sequence with this fraction of virus chunks (among scored ones) is virus."""
        return virus_fraction >= self.min_virus_fraction

    def describe(self) -> str:
        """The rule in words, e.g. for ``run_info.json`` or a report."""
        chunk = (
            "max P(virus) >= max P(others) (the original rule)"
            if self.min_score is None
            else f"chunk score >= {self.min_score:g}"
        )
        return (
            f"a chunk counts as virus when {chunk}; a sequence is virus when at least "
            f"{self.min_virus_fraction:g} of its scored chunks do"
        )


DEFAULT_THRESHOLDS = CallThresholds()
"""Today's rules: the original chunk rule and a majority of the scored chunks."""

PRESETS: dict[Preset, CallThresholds] = {
    Preset.RELAXED: CallThresholds(min_score=0.4, min_virus_fraction=0.25),
    Preset.DEFAULT: DEFAULT_THRESHOLDS,
    Preset.CONSERVATIVE: CallThresholds(min_score=0.7, min_virus_fraction=0.75),
}
"""The numbers behind ``--preset`` (module docstring: what each is for)."""


def resolve_thresholds(
    preset: Preset | str = Preset.DEFAULT,
    *,
    min_score: float | None = None,
    min_virus_fraction: float | None = None,
) -> CallThresholds:
    """The thresholds of ``preset``, with each option that is given (not ``None``) overriding it.

    Raises :class:`~virnucpro.errors.ConfigError` for an unknown preset or a value out of range.
    """
    if isinstance(preset, str):
        try:
            preset = Preset(preset)
        except ValueError:
            names = ", ".join(p.value for p in Preset)
            raise ConfigError(
                f"unknown preset {preset!r} (--preset); choose one of: {names}."
            ) from None
    base = PRESETS[preset]
    return CallThresholds(
        min_score=base.min_score if min_score is None else min_score,
        min_virus_fraction=(
            base.min_virus_fraction if min_virus_fraction is None else min_virus_fraction
        ),
    )
