"""Do the three models fit together? Checked when a run resolves them, before any work.

The classifier takes the concatenation of one DNABERT-S and one ESM-2 embedding, so its input size
must equal the two encoders' widths (768 + 2560 = 3328 for the published weights). A mismatch would
otherwise surface only after both feature stages (minutes to hours). The sizes are read cheaply:
DNABERT-S from its ``config.json``, ESM-2 from the checkpoint's config (memory-mapped, no weights
copied), the classifier from its (small) file.

The published classifiers are named after the chunk length they were trained on
(``300_model.pth``, ``500_model.pth``); one used with the other length runs, but with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from virnucpro.errors import ModelLoadError
from virnucpro.models.discovery import ResolvedModels

__all__ = ["ModelDims", "check_compatibility"]

logger = logging.getLogger(__name__)

_TRAINED_LENGTH = re.compile(r"^(300|500)_model\b")


@dataclass(frozen=True, slots=True)
class ModelDims:
    """The embedding widths of the encoders and the classifier's input size."""

    dnabert: int
    esm: int
    classifier: int


def _dims(models: ResolvedModels) -> ModelDims:
    from virnucpro.models.reference.classifier import load_classifier
    from virnucpro.models.reference.dnabert import DnabertConfig
    from virnucpro.models.reference.esm2 import read_esm2_checkpoint

    dnabert = DnabertConfig.from_json(models.dnabert.path / "config.json").hidden_size
    spec, _ = read_esm2_checkpoint(models.esm.path)
    classifier = int(load_classifier(models.classifier.path).input_dim)
    return ModelDims(dnabert=int(dnabert), esm=int(spec.embed_dim), classifier=classifier)


def check_compatibility(models: ResolvedModels, chunk_length: int) -> ModelDims:
    """The models' sizes; ModelLoadError naming all three when they do not fit, a warning when the
    classifier's name says it was trained on another chunk length."""
    dims = _dims(models)
    if dims.dnabert + dims.esm != dims.classifier:
        raise ModelLoadError(
            f"{models.classifier.path}: the classifier takes {dims.classifier} features, but "
            f"DNABERT-S ({models.dnabert.path}) gives {dims.dnabert} and ESM-2 ({models.esm.path}) "
            f"{dims.esm}, {dims.dnabert + dims.esm} together; use the classifier trained with these "
            "two models (the published ones take 768 + 2560 = 3328)"
        )
    match = _TRAINED_LENGTH.match(models.classifier.path.name)
    if match and int(match.group(1)) != chunk_length:
        logger.warning(
            "%s was trained on %s-bp chunks but this run cuts %d-bp chunks; use --chunk-length %s "
            "or the %d_model classifier", models.classifier.path, match.group(1), chunk_length,
            match.group(1), chunk_length,
        )
    return dims
