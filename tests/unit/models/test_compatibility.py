"""The three models are checked against each other before any work (sizes; chunk length by name)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from virnucpro.errors import ModelLoadError
from virnucpro.models.compatibility import check_compatibility
from virnucpro.models.discovery import resolve_models


def test_fitting_models_report_their_sizes(golden_tiny_dir: Path) -> None:
    models = resolve_models(golden_tiny_dir / "dnabert_s_tiny", golden_tiny_dir / "esm2_t36_tiny.pt",
                            golden_tiny_dir / "tiny_500_model.pth", 500)
    dims = check_compatibility(models, 500)
    assert (dims.dnabert, dims.esm, dims.classifier) == (32, 16, 48)


def test_a_classifier_that_does_not_fit_names_the_three_sizes(golden_tiny_dir: Path) -> None:
    models = resolve_models(golden_tiny_dir / "dnabert_s_tiny_12h", golden_tiny_dir / "esm2_t36_tiny.pt",
                            golden_tiny_dir / "tiny_500_model.pth", 500)
    with pytest.raises(ModelLoadError, match=r"takes 48 features, but DNABERT-S .* gives 48 and ESM-2 .* 16, 64"):
        check_compatibility(models, 500)


def test_a_classifier_named_for_another_chunk_length_warns(golden_tiny_dir: Path, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    renamed = tmp_path / "500_model.pth"
    shutil.copy(golden_tiny_dir / "tiny_500_model.pth", renamed)
    models = resolve_models(golden_tiny_dir / "dnabert_s_tiny", golden_tiny_dir / "esm2_t36_tiny.pt", renamed, 300)
    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        check_compatibility(models, 300)
    assert "trained on 500-bp chunks but this run cuts 300-bp chunks" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        check_compatibility(models, 500)
    assert "trained on" not in caplog.text
