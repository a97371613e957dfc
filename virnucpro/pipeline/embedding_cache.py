"""An opt-in embedding cache shared by runs (``--embedding-cache DIR``): a frame whose model input
was embedded before, by the same model file at the same precision, is read instead of computed.

Why: a lab re-runs overlapping samples (re-sequenced hosts, the same phage panel in every night's
batch, re-analyses with another classifier or other thresholds); an ESM-2 3B embedding costs far
more to compute than to read.

Key: a cache folder per *producer* — stage, the model file's SHA-256 (for DNABERT-S also its
tokenizer's), the resolved precision, the device kind (the CPU's reference modules and the GPU's
fast path agree only to rounding), the feature format, the versions of virnucpro and torch that
computed them, and the SHA-256 of ``virnucpro/models``' source (the code of the embedding
itself). Any difference is another folder, so cached work is reused only when everything that
produced it is the same. Inside it a row is found by the SHA-256 of the string the model reads (the
frame's DNA for DNABERT-S, its protein for ESM-2).

Layout: ``DIR/<stage>-<16 hex of the producer's SHA-256>/KEY.json`` (the producer, readable) and
``packs/*.npz``: feature files in the run's own format whose IDs are input SHA-256s, each written
atomically by one run (unique names: runs may share a cache at the same time, nothing is ever
rewritten in place). A pack that cannot be read, or whose rows are not one finite row per ID, is
left out (logged) and its frames are computed; the cache never fails a run.

A row read from the cache is the value this software computed for that input in an earlier run;
like the per-run de-duplication (:mod:`~virnucpro.pipeline.dedupe`) it can differ from a fresh
computation in the last bits, because a frame's batch neighbours change the padding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.disk import disk_errors
from virnucpro.errors import OutputError, WorkerError
from virnucpro.models.code_identity import models_code_sha256
from virnucpro.pipeline.shards import ShardFrame, load_features, save_features
from virnucpro.pipeline.stage import FeatureStage

__all__ = ["CACHE_FORMAT", "CACHE_SOURCE", "CacheHit", "EmbeddingCache", "cache_dir_error", "input_sha256",
           "producer_key"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_SOURCE = "@cache:"
"""The source-shard name of a row read from the cache (followed by the pack's path)."""
PACKS = "packs"
KEY_FILE = "KEY.json"


def input_sha256(stage: FeatureStage, frame: ShardFrame) -> str:
    """The SHA-256 (hex) of what ``stage``'s model reads of ``frame``."""
    text = frame.dna if stage is FeatureStage.DNABERT else frame.protein
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def producer_key(
    stage: FeatureStage,
    model_sha256: str,
    precision: str,
    device_kind: str,
    tokenizer_sha256: str | None,
    feature_format: int,
) -> dict[str, Any]:
    """Everything that decides a cached row's value (see the module's docstring)."""
    import torch

    from virnucpro import __version__

    return {
        "cache_format": CACHE_FORMAT,
        "stage": stage.value,
        "model_sha256": model_sha256,
        "tokenizer_sha256": tokenizer_sha256,
        "precision": precision,
        "device": device_kind,
        "feature_format": feature_format,
        "virnucpro": __version__,
        "models_code_sha256": models_code_sha256(),
        "torch": torch.__version__,
    }


@dataclass(frozen=True, slots=True)
class CacheHit:
    pack: Path
    sha256: str


class EmbeddingCache:
    """One producer's folder of a cache directory: look rows up, add a run's new rows."""

    def __init__(self, root: Path, key: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.key = dict(key)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = self.root / f"{self.key['stage']}-{digest}"
        self._index: dict[str, Path] | None = None
        self._checked: dict[Path, bool] = {}  # pack -> proved usable (read once per run)

    @property
    def packs_dir(self) -> Path:
        return self.folder / PACKS

    def index(self) -> dict[str, Path]:
        """Input SHA-256 → the pack holding its row (packs' IDs read once, rows not)."""
        if self._index is None:
            self._index = {}
            if self.packs_dir.is_dir():
                for pack in sorted(self.packs_dir.glob("*.npz")):
                    ids = _pack_ids(pack)
                    for sha in ids or ():
                        self._index.setdefault(sha, pack)
        return self._index

    def lookup(self, shas: Iterable[str]) -> dict[str, CacheHit]:
        """The hits among ``shas``, from packs proved readable (a bad pack's rows are misses)."""
        index = self.index()
        wanted = {sha: index[sha] for sha in set(shas) if sha in index}
        for pack in set(wanted.values()) - set(self._checked):
            self._checked[pack] = _pack_usable(pack)
        bad = {pack for pack, usable in self._checked.items() if not usable}
        if bad:
            self._index = {sha: pack for sha, pack in index.items() if pack not in bad}
        return {sha: CacheHit(pack, sha) for sha, pack in wanted.items() if pack not in bad}

    def add(self, shas: list[str], emb: np.ndarray) -> int:
        """Store rows (input SHA-256s and their embeddings) new to the cache as a new pack; the
        number stored. A cache that cannot be written is logged, never fatal: the run's own
        outputs do not depend on it."""
        index = self.index()
        keep = [i for i, sha in enumerate(shas) if sha not in index]
        if not keep:
            return 0
        new_ids = [shas[i] for i in keep]
        pack = self.packs_dir / f"{uuid.uuid4().hex}.npz"
        try:
            with disk_errors(self.folder):
                self.packs_dir.mkdir(parents=True, exist_ok=True)
                if not (self.folder / KEY_FILE).is_file():
                    atomic_write_text(self.folder / KEY_FILE, json.dumps(self.key, indent=1, sort_keys=True) + "\n")
            save_features(pack, new_ids, np.asarray(emb)[keep])
        except (OSError, OutputError) as exc:  # DiskError is an OutputError
            logger.warning("embedding cache %s: could not add %d rows (%s); the run goes on without",
                           self.folder, len(new_ids), exc)
            return 0
        for sha in new_ids:
            index[sha] = pack
        self._checked[pack] = True
        return len(new_ids)


def _pack_ids(pack: Path) -> list[str] | None:
    try:
        with np.load(pack, allow_pickle=False) as data:
            return [str(x) for x in data["ids"]]
    except Exception as exc:  # any bytes can be on disk; numpy and zipfile raise many kinds
        logger.warning("embedding cache: %s is unreadable (%s: %s); its rows are computed again",
                       pack, type(exc).__name__, exc)
        return None


def _pack_usable(pack: Path) -> bool:
    ids = _pack_ids(pack)
    if ids is None:
        return False
    try:
        load_features(pack, ids)  # one finite row per ID
    except WorkerError as exc:
        logger.warning("embedding cache: %s; its rows are computed again", exc)
        return False
    return True


def cache_dir_error(root: Path) -> str | None:
    """Why ``root`` cannot be an embedding cache directory (None: it can)."""
    if root.exists() and not root.is_dir():
        return f"embedding cache {root} is a file, not a directory; name a directory (it is created if missing)"
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK):
        return f"embedding cache {root} cannot be written; name a directory you can write to"
    return None
