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

With an embedding cache (:mod:`~virnucpro.pipeline.embedding_cache`), a representative whose
input the cache holds is read from the cache's pack instead (its rows name the pack as their
source, :data:`~virnucpro.pipeline.embedding_cache.CACHE_SOURCE`); the rows the workers compute are
added to the cache after the stage (:func:`add_to_cache`).

Resume: a unique file is written atomically by a worker, so one found complete is not computed
again; a shard whose full file exists is not planned at all. The ``unique/`` folder lives in the
stage's keyed folder, so work made by another model or precision is removed with it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.domain.disk import disk_errors
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.embedding_cache import CACHE_SOURCE, EmbeddingCache, input_sha256
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

__all__ = ["DEDUPE", "UniqueShard", "SourceFiles", "Expansion", "plan_unique", "work_done", "expand",
           "remove_unique", "add_to_cache"]

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
    work_sha256: tuple[str, ...] = ()  # with a cache: the input SHA-256 of each of work_ids

    @property
    def duplicates(self) -> int:
        """Frames whose row is another frame's of this run (not computed, not read from a cache)."""
        return sum(1 for frame_id, source, source_id in self.rows
                   if source_id != frame_id and not source.startswith(CACHE_SOURCE))

    @property
    def cache_hits(self) -> int:
        """Frames whose row is read from the embedding cache."""
        return sum(1 for _, source, _ in self.rows if source.startswith(CACHE_SOURCE))

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
    stage: FeatureStage,
    shards: list[Shard],
    todo: Iterable[Shard],
    paths: OutputPaths,
    cache: EmbeddingCache | None = None,
) -> list[UniqueShard]:
    """Write the representatives' work shard of each shard in ``todo`` and say where its rows
    come from. ``shards`` is every shard of the run, in order (done ones included: a frame seen
    there is not computed again); a representative ``cache`` holds is read from it."""
    todo_ids = {s.shard_id for s in todo}
    first: dict[bytes, tuple[str, str]] = {}  # digest of the model's input -> (shard name, frame id)
    planned: list[UniqueShard] = []
    folder = unique_dir(paths, stage)
    for shard in shards:
        frames = read_shard(shard.path)
        planning = shard.shard_id in todo_ids
        shas = [input_sha256(stage, f) for f in frames] if cache is not None and planning else []
        hits = cache.lookup(shas) if shas else {}
        rows: list[tuple[str, str, str]] = []
        own: list[ShardFrame] = []
        own_shas: list[str] = []
        for i, frame in enumerate(frames):
            key = _digest(_model_input(stage, frame)) if DEDUPE else b""
            seen = first.get(key) if DEDUPE else None
            hit = hits.get(shas[i]) if seen is None and shas else None
            if hit is not None:
                seen = (CACHE_SOURCE + str(hit.pack), hit.sha256)
                if DEDUPE:
                    first[key] = seen
            if seen is None:
                if DEDUPE:
                    first[key] = (shard.name, frame.frame_id)
                own.append(frame)
                own_shas.extend(shas[i:i + 1])
                rows.append((frame.frame_id, shard.name, frame.frame_id))
            else:
                rows.append((frame.frame_id, seen[0], seen[1]))
        if not planning:
            continue
        if len(own) == len(frames):
            planned.append(UniqueShard(shard, shard, paths.feature_file(stage.value, shard.name),
                                       tuple(rows), tuple(own_shas)))
            continue
        work = write_shard(folder / f"{shard.name}.tsv", shard.shard_id, own) if own else None
        planned.append(UniqueShard(shard, work, folder / f"{shard.name}.npz", tuple(rows), tuple(own_shas)))
    return planned


def add_to_cache(cache: EmbeddingCache, planned: Iterable[UniqueShard]) -> int:
    """Add the rows the workers computed for ``planned`` to ``cache``; the number added."""
    added = 0
    for unique in planned:
        if unique.work is None or not unique.work_sha256:
            continue
        emb = load_features(unique.out_path, unique.work_ids)
        added += cache.add(list(unique.work_sha256), emb)
    return added


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
        elif source.startswith(CACHE_SOURCE):
            path = Path(source[len(CACHE_SOURCE):])
        else:
            path = paths.feature_file(stage.value, source)
        index, matrix = sources.rows(path)
        found[(source, source_id)] = matrix[index[source_id]]
    emb = np.stack([found[(source, source_id)] for _, source, source_id in unique.rows])
    save_features(paths.feature_file(stage.value, unique.shard.name), [r[0] for r in unique.rows], emb)


class Expansion:
    """Writes the full feature files of a stage's planned shards while the stage runs: a shard is
    expanded as soon as its own rows are computed and every shard it copies rows from is complete
    (a shard only copies from earlier shards, whose files are complete once expanded, computed
    without duplicates, or done before the run). The stage then waits only for the shards that
    finished last, not for all of them.

    Not thread-safe: one thread calls :meth:`computed` (the stage's expanding thread), and
    :meth:`finish` once that thread is done.
    """

    def __init__(self, stage: FeatureStage, shards: list[Shard], planned: list[UniqueShard],
                 computed: Iterable[int], paths: OutputPaths,
                 on_complete: Callable[[Shard], None] | None = None) -> None:
        """``shards``: every shard of the run; ``planned``: those to do (plan order = shard
        order); ``computed``: the IDs of planned shards whose rows need no computing;
        ``on_complete(shard)`` is called (in the expanding thread) once a planned shard's full
        feature file is written."""
        planned_ids = {u.shard.shard_id for u in planned}
        self.stage = stage
        self.paths = paths
        self.sources = SourceFiles()
        self._pending = list(planned)
        self._computed = set(computed)
        self._complete = {s.name for s in shards if s.shard_id not in planned_ids}
        self._needs = {
            u.shard.shard_id: {source for _, source, _ in u.rows
                               if source != u.shard.name and not source.startswith(CACHE_SOURCE)}
            for u in planned
        }
        self.expanded = 0
        self.on_complete = on_complete

    def computed(self, shard_id: int | None = None) -> None:
        """Shard ``shard_id``'s rows are computed (None: nothing new); expand what can be now."""
        if shard_id is not None:
            self._computed.add(shard_id)
        progress = True
        while progress:
            progress = False
            for unique in list(self._pending):
                shard = unique.shard
                if shard.shard_id not in self._computed or not self._needs[shard.shard_id] <= self._complete:
                    continue
                if unique.needs_expanding:
                    started = time.perf_counter()
                    expand(self.stage, unique, self.paths, self.sources)
                    self.expanded += 1
                    logger.debug("%s: %s's duplicates' rows written in %.3f s", self.stage.label, shard.name,
                                 time.perf_counter() - started)
                self._complete.add(shard.name)
                self._pending.remove(unique)
                progress = True
                if self.on_complete is not None:
                    self.on_complete(shard)

    def finish(self) -> None:
        """Expand what is left (every shard's rows are computed by now)."""
        self._computed.update(u.shard.shard_id for u in self._pending)
        self.computed()
        if self._pending:  # a source that is neither earlier nor planned: a planning bug
            names = ", ".join(u.shard.name for u in self._pending[:5])
            raise RuntimeError(f"shards {names} copy rows from shards that are not complete")


def _file_ids(path: Path) -> list[str]:
    with np.load(path, allow_pickle=False) as data:
        return [str(x) for x in data["ids"]]


def remove_unique(paths: OutputPaths, stage: FeatureStage) -> None:
    """Remove the stage's unique work files (every shard's full file is written)."""
    folder = unique_dir(paths, stage)
    with disk_errors(folder):
        if folder.is_dir():
            shutil.rmtree(folder)

