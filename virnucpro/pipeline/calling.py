"""The run's calling settings: thresholds, region rule and calibration, resolved once per run.

:func:`calling_settings` turns the raw run parameters of a :class:`~virnucpro.config.RunConfig`
(``preset``, ``min_score``, ``min_virus_fraction``, ``smooth_window``, ``max_gap``,
``min_region_length``, ``calibration``) into the domain's typed records
(:class:`~virnucpro.domain.thresholds.CallThresholds`,
:class:`~virnucpro.domain.regions.RegionOptions`,
:class:`~virnucpro.domain.calibration.Calibration`). It runs when a run is planned, before any
model is loaded, so a threshold out of range, an unknown preset or a calibration file that is
missing or fitted at another chunk length fails the run at once (:class:`ConfigError`,
:class:`InputError`) rather than after the feature stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virnucpro.config import RunConfig
from virnucpro.domain.calibration import Calibration, read_calibration
from virnucpro.domain.checksums import sha256_file
from virnucpro.domain.regions import RegionOptions
from virnucpro.domain.thresholds import CallThresholds, Preset, resolve_thresholds
from virnucpro.errors import ConfigError

__all__ = ["CallSettings", "calling_settings"]


@dataclass(frozen=True, slots=True)
class CallSettings:
    """How a run turns chunk scores into calls, regions and calibrated scores."""

    preset: Preset
    thresholds: CallThresholds
    regions: RegionOptions
    calibration: Calibration | None = None
    calibration_file: Path | None = None
    calibration_sha256: str | None = None


def calling_settings(config: RunConfig) -> CallSettings:
    """The settings of ``config``; an explicit ``min_score`` / ``min_virus_fraction`` overrides the
    preset's value. Raises :class:`ConfigError` / :class:`InputError` naming the option to fix."""
    thresholds = resolve_thresholds(
        config.preset, min_score=config.min_score, min_virus_fraction=config.min_virus_fraction
    )
    regions = RegionOptions(
        smooth_window=config.smooth_window,
        max_gap=config.max_gap,
        min_length=config.min_region_length,
    )
    if config.calibration is None:
        return CallSettings(Preset(config.preset), thresholds, regions)
    path = Path(config.calibration)
    calibration = read_calibration(path)
    fitted = calibration.chunk_length
    if fitted is not None and fitted != config.chunk_length:
        raise ConfigError(
            f"{path}: this calibration was fitted on a {fitted}-bp run, but this run uses "
            f"--chunk-length {config.chunk_length} (another classifier, other scores). Use a "
            f"calibration fitted with `virnucpro calibrate` on a labelled {config.chunk_length}-bp "
            "run, or drop --calibration."
        )
    return CallSettings(
        Preset(config.preset), thresholds, regions, calibration, path, sha256_file(path)
    )
