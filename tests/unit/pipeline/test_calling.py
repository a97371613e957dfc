"""The run's calling settings: presets, explicit overrides, region options, calibration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.domain.calibration import fit_calibration, write_calibration
from virnucpro.domain.regions import DEFAULT_REGION_OPTIONS, RegionOptions
from virnucpro.domain.thresholds import DEFAULT_THRESHOLDS, PRESETS, CallThresholds, Preset
from virnucpro.errors import ConfigError, InputError
from virnucpro.pipeline.calling import calling_settings
from virnucpro.pipeline.parameters import build_config


def _settings(**values):  # type: ignore[no-untyped-def]
    return calling_settings(build_config({"input_fasta": "s.fa", **values}))


def test_the_run_defaults_are_the_rules_defaults() -> None:
    settings = _settings()
    assert settings.preset is Preset.DEFAULT
    assert settings.thresholds == DEFAULT_THRESHOLDS and settings.thresholds.is_original
    assert settings.regions == DEFAULT_REGION_OPTIONS
    assert settings.calibration is None


def test_a_preset_and_an_explicit_option_over_it() -> None:
    assert _settings(preset="conservative").thresholds == PRESETS[Preset.CONSERVATIVE]
    mixed = _settings(preset="conservative", min_virus_fraction="0.9")  # strings, as from a CLI
    assert mixed.thresholds == CallThresholds(min_score=0.7, min_virus_fraction=0.9)
    assert _settings(min_score=0.6).thresholds == CallThresholds(min_score=0.6, min_virus_fraction=0.5)


def test_region_options_come_from_the_run_parameters() -> None:
    settings = _settings(smooth_window=3, max_gap=0, min_region_length="5000")
    assert settings.regions == RegionOptions(smooth_window=3, max_gap=0, min_length=5000)


@pytest.mark.parametrize(("values", "message"), [
    ({"preset": "strict"}, "unknown preset 'strict'"),
    ({"min_score": 1.5}, r"min_score \(--min-score\) must be a chunk score between 0 and 1"),
    ({"min_virus_fraction": 0}, r"--min-virus-fraction\) must be above 0"),
    ({"smooth_window": 2}, r"--smooth-window\) must be an odd number"),
    ({"min_region_length": -1}, r"--min-region-length\) must be 0 or more"),
])
def test_bad_values_name_the_option(values, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        _settings(**values)


def _calibration(tmp_path: Path, chunk_length: int | None) -> Path:
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 4
    labels = [False, False, True, False, True, True] * 4
    path = tmp_path / "calibration.json"
    write_calibration(path, fit_calibration(scores, labels, chunk_length=chunk_length))
    return path


def test_a_calibration_file_is_read_and_checked(tmp_path: Path) -> None:
    path = _calibration(tmp_path, 500)
    settings = _settings(calibration=str(path))
    assert settings.calibration is not None and settings.calibration_file == path
    assert settings.calibration_sha256 is not None and len(settings.calibration_sha256) == 64
    with pytest.raises(ConfigError, match="fitted on a 500-bp run, but this run uses --chunk-length 300"):
        _settings(calibration=str(path), chunk_length=300)
    with pytest.raises(InputError, match="calibration file not found"):
        _settings(calibration=str(tmp_path / "missing.json"))
