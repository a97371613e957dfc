"""What produced the cached work of a run: the key beside each cache folder.

Feature files are reused only when they were made from the same prepared input (the preparation's
own key, ``prepared.json``) by the same model file (SHA-256; for DNABERT-S also its tokenizer),
at the same precision, by the same feature-file format. Score files likewise: same classifier
(SHA-256), same features (the two feature keys), same format. Each cache folder holds its key in
``KEY.json``; a folder whose key differs (or that has none) is emptied before the stage runs, and
so is everything made from it: a new classifier re-scores without re-embedding; a new encoder
re-embeds its stage and re-scores.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.checksums import sha256_file, sha256_file_unchanged
from virnucpro.models.discovery import ModelLocation
from virnucpro.pipeline.stage import FeatureStage

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "SCORE_FORMAT_VERSION",
    "KEY_FILE",
    "feature_key",
    "score_key",
    "read_key",
    "claim_folder",
]

logger = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 1
SCORE_FORMAT_VERSION = 1
KEY_FILE = "KEY.json"


def feature_key(stage: FeatureStage, model: ModelLocation, precision: str) -> dict[str, Any]:
    key: dict[str, Any] = {
        "stage": stage.value,
        "format": FEATURE_FORMAT_VERSION,
        "model_sha256": sha256_file_unchanged(model.weights_file),
        "precision": precision,
    }
    if model.tokenizer_file is not None:
        key["tokenizer_sha256"] = sha256_file(model.tokenizer_file)
    return key


def score_key(classifier_path: Path, features: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": SCORE_FORMAT_VERSION,
        "classifier_sha256": sha256_file_unchanged(classifier_path),
        "features": features,
    }


def read_key(folder: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((folder / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _describe(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if old is None:
        return "no record of what made them"
    changed = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    return "another " + ", ".join(sorted(set(changed)))


def claim_folder(folder: Path, key: dict[str, Any], what: str) -> bool:
    """Make ``folder`` hold only work made under ``key``: files made otherwise are removed and the
    key is recorded. True if it removed any. (Work made FROM these files has a key naming this one,
    so it is found stale in its own turn.)"""
    old = read_key(folder)
    stale = old != key and folder.is_dir() and any(p.name != KEY_FILE for p in folder.iterdir())
    if stale:
        logger.warning("%s in %s were made with %s; computing them again", what, folder, _describe(old, key))
        shutil.rmtree(folder)
    if old != key or stale:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / KEY_FILE, json.dumps(key, indent=1, sort_keys=True) + "\n")
    return stale
