"""Calibrating the per-sequence ``virus_score`` on a user's labelled run; the FDR column.

The classifier's probabilities are not calibrated on a user's data (another sample type, another
read length): a ``virus_score`` of 0.9 need not mean that 9 in 10 such sequences are viruses. With
a labelled run (``labels.tsv``, :func:`read_labels`) this module fits *temperature scaling*:

- ``z = logit(p)`` with ``p`` clipped to ``[1e-6, 1 − 1e-6]`` (:data:`PROBABILITY_CLIP`: scores
  of exactly 0 or 1 occur and have no logit);
- calibrated ``P(virus) = sigmoid(z / T)``, one parameter ``T`` > 0, fitted by minimising the
  negative log-likelihood of the labels. No bias term: temperature scaling keeps the ranking of
  the sequences and keeps 0.5 at 0.5, so it changes no call and no threshold decision on the
  uncalibrated scale, and one parameter fits well on the few dozen labelled sequences users
  typically have. ``T > 1`` softens an over-confident score, ``T < 1`` sharpens an
  under-confident one;
- the NLL is convex in ``1/T`` (logistic regression on one feature without intercept): its
  derivative is increasing, and its root is found by Newton steps kept inside a bisection
  bracket on ``T`` in :data:`TEMPERATURE_BOUNDS` (``[0.05, 20]``); labels that the scores separate
  perfectly push ``T`` to the lower bound.

Reported with the fit: the expected calibration error before and after
(:func:`expected_calibration_error`: 10 equal-width bins of the score over [0, 1],
``sum(n_b / n * |mean score_b − fraction virus_b|)``) and the NLL per sequence before and after.

The FDR column (:func:`fdr_column`), as geNomad reports it: sort the sequences called virus by
calibrated score, highest first; the FDR of a call is the running mean of ``1 − p`` over the calls
down to it, i.e. the expected fraction of false calls among all calls at least as high. Tied
scores share the value at the end of their tie (a threshold cannot split them). It is
non-decreasing along the sorted order.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.calls import SequenceCall, SequenceCallLabel
from virnucpro.errors import InputError

__all__ = [
    "CALIBRATION_VERSION",
    "PROBABILITY_CLIP",
    "TEMPERATURE_BOUNDS",
    "MIN_PER_CLASS",
    "LabelledSequence",
    "Calibration",
    "read_labels",
    "match_labels",
    "expected_calibration_error",
    "log_loss",
    "fit_temperature",
    "fit_calibration",
    "fit_labelled_run",
    "fdr_column",
    "calibrate_calls",
    "write_calibration",
    "read_calibration",
]

logger = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
PROBABILITY_CLIP = 1e-6
TEMPERATURE_BOUNDS = (0.05, 20.0)
MIN_PER_CLASS = 10
"""Labelled sequences with a score needed of each class (virus, non-virus) to fit."""

_LABEL_VALUES = {
    "virus": True,
    "1": True,
    "true": True,
    "non-virus": False,
    "0": False,
    "false": False,
}
_ACCEPTED = "virus/non-virus, 1/0 or true/false"
_HEADER = ("sequence_id", "label")
_MAX_LISTED = 5
_BINS = 10


@dataclass(frozen=True, slots=True)
class LabelledSequence:
    """One line of ``labels.tsv``."""

    sequence_id: str
    is_virus: bool
    line: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fitted temperature and what it was fitted on (the calibration file, as JSON)."""

    temperature: float
    n_sequences: int
    n_virus: int
    n_non_virus: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    fitted_on: str = ""
    chunk_length: int | None = None
    bins: int = _BINS
    score: str = "virus_score"
    clip: float = PROBABILITY_CLIP
    version: int = CALIBRATION_VERSION

    def apply(self, p: float) -> float:
        """The calibrated P(virus) of a score ``p``: ``sigmoid(logit(p) / T)``."""
        return _sigmoid(_logit(p, self.clip) / self.temperature)

    def to_json(self) -> str:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "calibration file") -> Calibration:
        """Parse :meth:`to_json` output; :class:`InputError` naming ``source`` if it is not one."""
        fix = "Give a file written by `virnucpro calibrate`, or fit a new one."
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(f"{source}: is not JSON ({error}). {fix}") from None
        if not isinstance(data, dict) or "temperature" not in data:
            raise InputError(f"{source}: is not a VirNucPro calibration file. {fix}")
        if data.get("version") != CALIBRATION_VERSION:
            raise InputError(
                f"{source}: calibration file version {data.get('version')!r}; this VirNucPro "
                f"reads version {CALIBRATION_VERSION}. Fit it again with this version."
            )
        known = set(cls.__dataclass_fields__)
        try:
            calibration = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as error:
            raise InputError(f"{source}: incomplete calibration file ({error}). {fix}") from None
        low, high = TEMPERATURE_BOUNDS
        if not (
            isinstance(calibration.temperature, (int, float))
            and low <= calibration.temperature <= high
        ):
            raise InputError(
                f"{source}: temperature {calibration.temperature!r} is outside [{low}, {high}]; "
                f"the file was edited or damaged. {fix}"
            )
        return calibration


# -------------------------------------------------------------------------------------- labels
def read_labels(path: str | os.PathLike[str]) -> list[LabelledSequence]:
    """Read ``labels.tsv``: ``sequence_id<TAB>label`` per line, label virus/non-virus (1/0,
    true/false; any case). An optional header ``sequence_id<TAB>label``, blank lines and lines
    starting with ``#`` are skipped.

    Raises :class:`InputError` naming the file, the line and the fix for an unreadable file, a
    line that is not two fields, an unknown label, a duplicated ID or a file without labels.
    """
    name = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"{name}: file not found. Check the path of the labels file.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{name}: cannot be read as text ({error}).") from None
    labelled: list[LabelledSequence] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(labelled) == 0 and tuple(f.lower() for f in fields) == _HEADER:
            continue
        if len(fields) != 2 or not fields[0]:
            raise InputError(
                f"{name}: line {line_no}: expected 'sequence_id<TAB>label' (two fields separated "
                f"by one tab), got {line!r}. Fix the line and re-run."
            )
        sequence_id, label = fields
        if label.lower() not in _LABEL_VALUES:
            raise InputError(
                f"{name}: line {line_no}: unknown label {label!r} for '{sequence_id}'; use "
                f"{_ACCEPTED}."
            )
        if sequence_id in first_line:
            raise InputError(
                f"{name}: line {line_no}: '{sequence_id}' is labelled again (first at line "
                f"{first_line[sequence_id]}); give each sequence one label."
            )
        first_line[sequence_id] = line_no
        labelled.append(LabelledSequence(sequence_id, _LABEL_VALUES[label.lower()], line_no))
    if not labelled:
        raise InputError(
            f"{name}: holds no label. Write one line per sequence: 'sequence_id<TAB>label' with "
            f"label {_ACCEPTED}."
        )
    return labelled


def match_labels(
    labels: Sequence[LabelledSequence],
    scores: Mapping[str, float | None],
    labels_path: str | os.PathLike[str],
    *,
    min_per_class: int = MIN_PER_CLASS,
) -> tuple[list[float], list[bool]]:
    """The ``(scores, labels)`` pairs to fit on: each labelled sequence's ``virus_score``.

    ``scores`` maps every sequence of the run to its ``virus_score`` (``None`` for a no-call:
    such a labelled sequence is skipped, with a warning). Raises :class:`InputError` for a
    labelled ID that is not in the run, or when fewer than ``min_per_class`` sequences of a
    class remain.
    """
    name = str(labels_path)
    unknown = [label for label in labels if label.sequence_id not in scores]
    if unknown:
        shown = ", ".join(f"'{u.sequence_id}' (line {u.line})" for u in unknown[:_MAX_LISTED])
        more = f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
        raise InputError(
            f"{name}: {len(unknown)} labelled sequence(s) are not in the run: {shown}{more}. "
            "Label the sequences of this run's input (IDs as in prediction_sequences.tsv), or "
            "remove those lines."
        )
    pairs = [(scores[label.sequence_id], label.is_virus) for label in labels]
    kept = [(score, is_virus) for score, is_virus in pairs if score is not None]
    if len(kept) < len(pairs):
        logger.warning(
            "%s: %d labelled sequence(s) have no score (no-call) and are left out of the fit",
            name,
            len(pairs) - len(kept),
        )
    n_virus = sum(is_virus for _, is_virus in kept)
    n_non_virus = len(kept) - n_virus
    if min(n_virus, n_non_virus) < min_per_class:
        raise InputError(
            f"{name}: {n_virus} virus and {n_non_virus} non-virus labelled sequences have a "
            f"score; calibration needs at least {min_per_class} of each class. Label more "
            "sequences of the class that is short."
        )
    return [score for score, _ in kept], [is_virus for _, is_virus in kept]


# ---------------------------------------------------------------------------------- measures
def expected_calibration_error(
    scores: Sequence[float], labels: Sequence[bool], bins: int = _BINS
) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1] (a score of 1 falls in the last bin)."""
    _check_pairs(scores, labels)
    totals = [[0, 0.0, 0] for _ in range(bins)]  # count, sum of scores, number of virus
    for score, label in zip(scores, labels):
        entry = totals[min(bins - 1, max(0, int(score * bins)))]
        entry[0] += 1
        entry[1] += score
        entry[2] += int(label)
    n = len(scores)
    return math.fsum(abs(total - virus) / n for count, total, virus in totals if count)


def log_loss(
    scores: Sequence[float], labels: Sequence[bool], clip: float = PROBABILITY_CLIP
) -> float:
    """Mean negative log-likelihood of the labels under the (clipped) scores."""
    _check_pairs(scores, labels)
    return math.fsum(
        _nll_term(_logit(score, clip), label) for score, label in zip(scores, labels)
    ) / len(scores)


# --------------------------------------------------------------------------------------- fit
def fit_temperature(
    scores: Sequence[float], labels: Sequence[bool], clip: float = PROBABILITY_CLIP
) -> float:
    """The temperature ``T`` in :data:`TEMPERATURE_BOUNDS` minimising the NLL (module docstring)."""
    _check_pairs(scores, labels)
    logits = [_logit(score, clip) for score in scores]
    ys = [float(label) for label in labels]

    def gradient(beta: float) -> tuple[float, float]:
        """d NLL / d beta and its derivative, at beta = 1 / T."""
        first = second = 0.0
        for z, y in zip(logits, ys):
            p = _sigmoid(beta * z)
            first += (p - y) * z
            second += p * (1.0 - p) * z * z
        return first, second

    low, high = 1.0 / TEMPERATURE_BOUNDS[1], 1.0 / TEMPERATURE_BOUNDS[0]
    if gradient(low)[0] >= 0.0:
        return 1.0 / low
    if gradient(high)[0] <= 0.0:
        return 1.0 / high
    beta = min(max(1.0, low), high)
    for _ in range(200):
        first, second = gradient(beta)
        if abs(first) <= 1e-12 * len(ys):
            break
        if first > 0.0:
            high = beta
        else:
            low = beta
        step = beta - first / second if second > 0.0 else math.nan
        beta = step if low < step < high else (low + high) / 2
        if high - low <= 1e-12 * high:
            break
    return 1.0 / beta


def fit_calibration(
    scores: Sequence[float],
    labels: Sequence[bool],
    *,
    fitted_on: str = "",
    chunk_length: int | None = None,
    bins: int = _BINS,
) -> Calibration:
    """Fit the temperature and measure the fit (ECE and NLL before and after)."""
    temperature = fit_temperature(scores, labels)
    calibrated = [_sigmoid(_logit(score, PROBABILITY_CLIP) / temperature) for score in scores]
    n_virus = sum(bool(label) for label in labels)
    return Calibration(
        temperature=temperature,
        n_sequences=len(scores),
        n_virus=n_virus,
        n_non_virus=len(labels) - n_virus,
        ece_before=expected_calibration_error(scores, labels, bins),
        ece_after=expected_calibration_error(calibrated, labels, bins),
        nll_before=log_loss(scores, labels),
        nll_after=log_loss(calibrated, labels),
        fitted_on=fitted_on,
        chunk_length=chunk_length,
        bins=bins,
    )


def fit_labelled_run(
    calls: Iterable[SequenceCall],
    labels_path: str | os.PathLike[str],
    *,
    fitted_on: str = "",
    chunk_length: int | None = None,
) -> Calibration:
    """``virnucpro calibrate``: fit on a run's calls (``prediction_sequences.tsv``) and labels.

    Raises :class:`InputError` as :func:`read_labels` and :func:`match_labels` do.
    """
    labels = read_labels(labels_path)
    scores = {call.record_id: call.virus_score for call in calls}
    fit_scores, fit_labels = match_labels(labels, scores, labels_path)
    return fit_calibration(
        fit_scores, fit_labels, fitted_on=fitted_on or str(labels_path), chunk_length=chunk_length
    )


# --------------------------------------------------------------------------------------- FDR
def fdr_column(scores: Sequence[float]) -> list[float]:
    """The FDR of each call from its calibrated score, in the order given (module docstring)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    fdr = [0.0] * len(scores)
    running = 0.0
    tie: list[int] = []
    for rank, index in enumerate(order, 1):
        running += 1.0 - scores[index]
        tie.append(index)
        is_last_of_tie = rank == len(order) or scores[order[rank]] != scores[index]
        if is_last_of_tie:
            for tied in tie:
                fdr[tied] = min(1.0, max(0.0, running / rank))
            tie = []
    return fdr


def calibrate_calls(
    calls: Iterable[SequenceCall], calibration: Calibration
) -> list[SequenceCall]:
    """The calls with ``calibrated_virus_score`` (every scored call) and ``fdr`` (virus calls)."""
    calibrated = [
        replace(call, calibrated_virus_score=calibration.apply(call.virus_score))
        if call.virus_score is not None
        else call
        for call in calls
    ]
    called = [
        (i, call.calibrated_virus_score)
        for i, call in enumerate(calibrated)
        if call.call is SequenceCallLabel.VIRUS and call.calibrated_virus_score is not None
    ]
    fdr = fdr_column([score for _, score in called])
    for (i, _), value in zip(called, fdr):
        calibrated[i] = replace(calibrated[i], fdr=value)
    return calibrated


# -------------------------------------------------------------------------------------- files
def write_calibration(path: str | os.PathLike[str], calibration: Calibration) -> None:
    """Write the calibration file (JSON) atomically."""
    atomic_write_text(path, calibration.to_json())


def read_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a calibration file; :class:`InputError` naming it when it is missing or not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"{path}: calibration file not found. Check the path, or fit one with "
            "`virnucpro calibrate`."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error}).") from None
    return Calibration.from_json(text, source=str(path))


# ------------------------------------------------------------------------------------ helpers
def _logit(p: float, clip: float) -> float:
    p = min(1.0 - clip, max(clip, p))
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _nll_term(z: float, label: bool) -> float:
    """``-log sigmoid(z)`` for a virus, ``-log(1 - sigmoid(z))`` otherwise, without overflow."""
    x = -z if label else z
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _check_pairs(scores: Sequence[float], labels: Sequence[bool]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not scores:
        raise ValueError("no labelled score")
