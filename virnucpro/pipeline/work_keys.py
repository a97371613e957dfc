"""What produced the cached work of a run: the key beside each cache folder.

Feature files are reused only when they were made from the same prepared input (the preparation's
own key, ``prepared.json``) by the same model file (SHA-256; for DNABERT-S also its tokenizer),
at the same precision, by the same feature-file format and model code
(:func:`~virnucpro.models.code_identity.models_code_sha256`). Score files likewise: same classifier
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
from virnucpro.models.code_identity import models_code_sha256
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
    "record_model_sha256",
    "file_identity",
]

logger = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 1
SCORE_FORMAT_VERSION = 1
KEY_FILE = "KEY.json"


def feature_key(stage: FeatureStage, model: ModelLocation, precision: str) -> dict[str, Any]:
    """The key of one stage's features, but the model file's SHA-256: see :func:`claim_folder`."""
    key: dict[str, Any] = {
        "stage": stage.value,
        "format": FEATURE_FORMAT_VERSION,
        "precision": precision,
        "models_code_sha256": models_code_sha256(),
    }
    if model.tokenizer_file is not None:
        key["tokenizer_sha256"] = sha256_file(model.tokenizer_file)
    return key


def file_identity(path: Path) -> list[Any]:
    """Where a file is and its stat (device, inode, size, modification time in ns): equal only for
    the same, unchanged file. Any write changes the modification time."""
    real = Path(path).resolve()
    st = real.stat()
    return [str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def score_key(classifier_path: Path, features: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The key of the scores: the classifier's SHA-256 and the features' keys (by content: a
    model file's place and stat are left out)."""
    return {
        "format": SCORE_FORMAT_VERSION,
        "classifier_sha256": sha256_file_unchanged(classifier_path),
        "features": {
            stage: None if key is None else {k: v for k, v in key.items() if k != "model_identity"}
            for stage, key in features.items()
        },
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


def _same_model(old: dict[str, Any], model: Path) -> bool:
    """The recorded model is this file: the same unchanged file (no hashing), or the same bytes."""
    if old.get("model_identity") == file_identity(model):
        return True
    recorded = old.get("model_sha256")
    return recorded is not None and recorded == sha256_file_unchanged(model)


def claim_folder(folder: Path, key: dict[str, Any], what: str, model: Path | None = None) -> bool:
    """Make ``folder`` hold only work made under ``key`` (and, given ``model``, by that model
    file): files made otherwise are removed and the key is recorded. True if it removed any.
    (Work made FROM these files has a key naming this one, so it is found stale in its own turn.)

    The model file is recognised by its identity and stat, and by its SHA-256 only when those
    changed (a copy, a move): the 5.7-GB ESM-2 checkpoint is not hashed on a stage's critical
    path. :func:`record_model_sha256` adds the digest once it is known.
    """
    old = read_key(folder)
    moved = False
    if model is not None and old is not None:
        same = _same_model(old, model)
        moved = same and old.get("model_identity") != file_identity(model)
        old = {k: v for k, v in old.items() if k not in ("model_identity", "model_sha256")}
        if not same:
            old["model"] = "changed"
    stale = old != key and folder.is_dir() and any(p.name != KEY_FILE for p in folder.iterdir())
    if stale:
        logger.warning("%s in %s were made with %s; computing them again", what, folder, _describe(old, key))
        shutil.rmtree(folder)
    if old != key or stale or moved:
        folder.mkdir(parents=True, exist_ok=True)
        record = dict(key)
        if model is not None:
            record["model_identity"] = file_identity(model)
        atomic_write_text(folder / KEY_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return stale


def settled_key(folder: Path, model: Path) -> dict[str, Any] | None:
    """``folder``'s key as :func:`record_model_sha256` leaves it: with the model file's SHA-256
    when the key names this file (it waits for the run's background checksums if they are
    reading the file, instead of reading it twice)."""
    key = read_key(folder)
    if key is None or key.get("model_identity") != file_identity(model) or "model_sha256" in key:
        return key
    return {**key, "model_sha256": sha256_file_unchanged(model)}


def record_model_sha256(folder: Path, model: Path) -> None:
    """Add the model file's SHA-256 to ``folder``'s key (after the stage: the run's background
    checksums have read the file by then), so a copy of the same file is recognised later."""
    key = read_key(folder)
    settled = settled_key(folder, model)
    if settled is not None and settled != key:
        atomic_write_text(folder / KEY_FILE, json.dumps(settled, indent=1, sort_keys=True) + "\n")
