"""``virnucpro calibrate``: fit a calibration on a finished, labelled run and write its file.

The run's ``prediction_sequences.tsv`` gives each sequence's ``virus_score``; its
``run_info.json`` the chunk length the calibration is for (a run of another chunk length refuses
the file, :mod:`virnucpro.pipeline.calling`). The fit is
:func:`virnucpro.domain.calibration.fit_labelled_run`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from virnucpro.domain.calibration import Calibration, fit_labelled_run, write_calibration
from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.tables import read_sequence_calls
from virnucpro.errors import InputError
from virnucpro.pipeline.run_info import RunInfo

__all__ = ["CalibrationResult", "calibrate_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    calibration: Calibration
    path: Path


def calibrate_run(
    output_dir: Path, labels: Path, out: Path | None = None
) -> CalibrationResult:
    """Fit on the run in ``output_dir`` with ``labels``; write to ``out`` (default: the run's
    ``calibration.json``). Raises :class:`InputError` naming what is missing and the fix."""
    paths = OutputPaths.for_dir(output_dir)
    if not paths.sequences.is_file():
        raise InputError(
            f"{output_dir}: has no {paths.sequences.name}; give the output directory of a finished "
            "`virnucpro predict` run."
        )
    calls = read_sequence_calls(paths.sequences)
    if calls and all(c.virus_score is None for c in calls):
        raise InputError(
            f"{paths.sequences}: has no virus_score column (written by an older VirNucPro); run "
            "`virnucpro predict` again into the same output directory (it reuses the finished "
            "work) and calibrate that."
        )
    chunk_length = _chunk_length(paths)
    calibration = fit_labelled_run(
        calls, labels, fitted_on=f"{paths.sequences} with {labels}", chunk_length=chunk_length
    )
    target = Path(out) if out is not None else paths.calibration
    write_calibration(target, calibration)
    return CalibrationResult(calibration, target)


def _chunk_length(paths: OutputPaths) -> int | None:
    try:
        return RunInfo.read(paths.run_info).chunk_length
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "%s: unreadable (%s); the calibration will not record the run's chunk length",
            paths.run_info, exc,
        )
        return None
