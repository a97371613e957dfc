"""Identical frames computed once per run: unique work shards out, full feature files back.

A model's embedding of a frame depends only on the string the model reads: DNABERT-S reads the
frame's DNA, ESM-2 its protein. The same DNA does NOT always give the same protein (a codon with a
letter other than A/C/G/T is dropped, so the frame's DNA, ``3p + 1`` bases for ``p`` residues, can
end before the strand's last codons), so each stage keys frames by its own model's input.

For the stage's shards, in shard order, the first frame with a given input is its
*representative*; every later frame with the same input is a *duplicate*. For each shard to do,
:func:`plan_unique` writes a work shard of its representatives only (``features/<stage>/unique/``,
the shard TSV format) — the workers compute those, unchanged — and :func:`expand` then writes the
shard's full feature file (every frame ID, in shard order), copying a duplicate's row from its
representative: from the shard's own unique file, or from an earlier shard's full feature file
(complete by then: shards are expanded in order, and a skipped shard is complete). Rows are read
per source file when a shard needs them (the most recently used files kept up to
:data:`SOURCE_CACHE_BYTES`); the run's embeddings are never held in memory together.

Resume: a unique file is written atomically by a worker, so one found complete is not computed
again; a shard whose full file exists is not planned at all. The ``unique/`` folder lives in the
stage's keyed folder, so work made by another model or precision is removed with it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.domain.disk import disk_errors
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.shards import (
    Shard,
    ShardFrame,
    features_complete,
    load_features,
    read_shard,
    save_features,
    write_shard,
)
from virnucpro.pipeline.stage import FeatureStage

__all__ = ["DEDUPE", "UniqueShard", "SourceFiles", "plan_unique", "work_done", "expand", "remove_unique"]

logger = logging.getLogger(__name__)

DEDUPE = True
"""Compute identical frames once. Internal switch (tests and the benchmark turn it off to compare)."""

UNIQUE_DIR = "unique"
SOURCE_CACHE_BYTES = 1 << 30
"""Feature files kept in memory while shards are expanded (most recently used first)."""


@dataclass(frozen=True, slots=True)
class UniqueShard:
    """One shard to do. ``work`` is what the workers compute (None: nothing, every frame is a
    duplicate) into ``out_path``; ``rows`` says where each frame's row comes from, in shard order:
    ``(frame_id, source shard name, source frame_id)``. A shard without duplicates is computed
    straight into its feature file (``work`` is the shard itself; nothing to expand)."""

    shard: Shard
    work: Shard | None
    out_path: Path
    rows: tuple[tuple[str, str, str], ...]

    @property
    def duplicates(self) -> int:
        return sum(1 for frame_id, _, source_id in self.rows if source_id != frame_id)

    @property
    def needs_expanding(self) -> bool:
        return self.work is not self.shard

    @property
    def work_ids(self) -> list[str]:
        """The frame IDs the workers compute for this shard, in order."""
        name = self.shard.name
        return [f for f, source, source_id in self.rows if source == name and source_id == f]


def _model_input(stage: FeatureStage, frame: ShardFrame) -> str:
    return frame.dna if stage is FeatureStage.DNABERT else frame.protein


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def unique_dir(paths: OutputPaths, stage: FeatureStage) -> Path:
    return paths.features_dir / stage.value / UNIQUE_DIR


def plan_unique(
    stage: FeatureStage, shards: list[Shard], todo: Iterable[Shard], paths: OutputPaths
) -> list[UniqueShard]:
    """Write the representatives' work shard of each shard in ``todo`` and say where its rows
    come from. ``shards`` is every shard of the run, in order (done ones included: a frame seen
    there is not computed again)."""
    todo_ids = {s.shard_id for s in todo}
    first: dict[bytes, tuple[str, str]] = {}  # digest of the model's input -> (shard name, frame id)
    planned: list[UniqueShard] = []
    folder = unique_dir(paths, stage)
    for shard in shards:
        frames = read_shard(shard.path)
        rows: list[tuple[str, str, str]] = []
        own: list[ShardFrame] = []
        for frame in frames:
            key = _digest(_model_input(stage, frame)) if DEDUPE else b""
            seen = first.get(key) if DEDUPE else None
            if seen is None:
                if DEDUPE:
                    first[key] = (shard.name, frame.frame_id)
                own.append(frame)
                rows.append((frame.frame_id, shard.name, frame.frame_id))
            else:
                rows.append((frame.frame_id, seen[0], seen[1]))
        if shard.shard_id not in todo_ids:
            continue
        if len(own) == len(frames):
            planned.append(UniqueShard(shard, shard, paths.feature_file(stage.value, shard.name),
                                       tuple(rows)))
            continue
        work = write_shard(folder / f"{shard.name}.tsv", shard.shard_id, own) if own else None
        planned.append(UniqueShard(shard, work, folder / f"{shard.name}.npz", tuple(rows)))
    return planned


def work_done(unique: UniqueShard) -> bool:
    """True when the shard's representatives need no computing (none, or their file is complete)."""
    if unique.work is None:
        return True
    return features_complete(unique.out_path, unique.work_ids)


class SourceFiles:
    """Feature files read for expansion, the most recently used kept up to ``max_bytes``
    (duplicates of one source shard are often spread over several later shards)."""

    def __init__(self, max_bytes: int = SOURCE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._files: OrderedDict[Path, tuple[dict[str, int], np.ndarray]] = OrderedDict()

    def rows(self, path: Path) -> tuple[dict[str, int], np.ndarray]:
        """The file's row index by frame ID and its checked rows."""
        if path in self._files:
            self._files.move_to_end(path)
            return self._files[path]
        file_ids = _file_ids(path)
        matrix = load_features(path, file_ids)  # checked: readable, one finite row per ID
        entry = ({frame_id: row for row, frame_id in enumerate(file_ids)}, matrix)
        self._files[path] = entry
        while len(self._files) > 1 and sum(m.nbytes for _, m in self._files.values()) > self.max_bytes:
            self._files.popitem(last=False)
        return entry


def expand(stage: FeatureStage, unique: UniqueShard, paths: OutputPaths,
           sources: SourceFiles | None = None) -> None:
    """Write ``unique.shard``'s full feature file from its unique file and earlier shards' files."""
    sources = sources if sources is not None else SourceFiles()
    found: dict[tuple[str, str], np.ndarray] = {}
    for _, source, source_id in unique.rows:
        if (source, source_id) in found:
            continue
        if source == unique.shard.name:
            path = unique.out_path
        else:
            path = paths.feature_file(stage.value, source)
        index, matrix = sources.rows(path)
        found[(source, source_id)] = matrix[index[source_id]]
    emb = np.stack([found[(source, source_id)] for _, source, source_id in unique.rows])
    save_features(paths.feature_file(stage.value, unique.shard.name), [r[0] for r in unique.rows], emb)


def _file_ids(path: Path) -> list[str]:
    with np.load(path, allow_pickle=False) as data:
        return [str(x) for x in data["ids"]]


def remove_unique(paths: OutputPaths, stage: FeatureStage) -> None:
    """Remove the stage's unique work files (every shard's full file is written)."""
    folder = unique_dir(paths, stage)
    with disk_errors(folder):
        if folder.is_dir():
            shutil.rmtree(folder)

