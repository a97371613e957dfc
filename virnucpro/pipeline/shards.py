"""Work units on disk: frame shards in, feature and score files out.

A shard is a TSV of frames (ID, record, chunk, DNA, protein). Workers write one feature file per
shard and stage (``.npz`` with ``ids`` and ``emb``), atomically, so a file that exists is complete;
:func:`load_features` checks it (IDs exactly the shard's, every value finite) before it is used.
Finished shards are therefore never recomputed on resume, and a bad file is recomputed, not used.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.records import Frame
from virnucpro.errors import WorkerError

__all__ = [
    "Shard",
    "ShardFrame",
    "write_shard",
    "read_shard",
    "save_features",
    "load_features",
    "features_complete",
    "check_feature_ids",
    "nonfinite_rows",
    "protein_tokens",
]


@dataclass(frozen=True, slots=True)
class Shard:
    """One work unit: ``n_tokens`` estimates its ESM-2 cost (protein length + BOS/EOS)."""

    shard_id: int
    path: Path
    n_frames: int
    n_tokens: int

    @property
    def name(self) -> str:
        return f"shard_{self.shard_id:06d}"


@dataclass(frozen=True, slots=True)
class ShardFrame:
    frame_id: str
    record_id: str
    chunk_id: str
    dna: str
    protein: str


def protein_tokens(protein: str) -> int:
    """ESM-2 tokens of a protein: BOS + residues (truncated at 1024) + EOS."""
    return min(len(protein), 1024) + 2


def write_shard(path: Path, shard_id: int, frames: Iterable[Frame]) -> Shard:
    """Write frames as a shard file atomically and describe it."""
    n_frames = 0
    n_tokens = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="ascii") as handle:
        for frame in frames:
            handle.write(
                f"{frame.id}\t{frame.record_id}\t{frame.chunk_id}\t{frame.dna}\t{frame.protein}\n"
            )
            n_frames += 1
            n_tokens += protein_tokens(frame.protein)
    return Shard(shard_id=shard_id, path=path, n_frames=n_frames, n_tokens=n_tokens)


def read_shard(path: Path) -> list[ShardFrame]:
    frames = []
    with open(path, encoding="ascii") as handle:
        for line in handle:
            frame_id, record_id, chunk_id, dna, protein = line.rstrip("\n").split("\t")
            frames.append(ShardFrame(frame_id, record_id, chunk_id, dna, protein))
    return frames


def iter_shard_ids(path: Path) -> Iterator[str]:
    with open(path, encoding="ascii") as handle:
        for line in handle:
            yield line.split("\t", 1)[0]


def save_features(path: Path, ids: list[str], emb: np.ndarray) -> None:
    """Write a feature file atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, ids=np.asarray(ids, dtype=str), emb=np.asarray(emb, dtype=np.float32))


def load_features(path: Path, expected_ids: list[str]) -> np.ndarray:
    """Load a feature file and prove it holds exactly one finite row per expected ID, in order.

    Rows are re-ordered by ID (never trusted by position); any missing, extra, duplicated or
    non-finite row raises :class:`WorkerError` naming the IDs.
    """
    with np.load(path, allow_pickle=False) as data:
        ids = [str(x) for x in data["ids"]]
        emb = np.asarray(data["emb"], dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise WorkerError(f"{path}: feature file is malformed ({emb.shape} for {len(ids)} IDs)")
    index = {frame_id: row for row, frame_id in enumerate(ids)}
    if len(index) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise WorkerError(f"{path}: frame IDs returned twice: {', '.join(dupes)}")
    missing = [i for i in expected_ids if i not in index]
    extra = sorted(set(index) - set(expected_ids))
    if missing or extra:
        raise WorkerError(
            f"{path}: {len(missing)} frame(s) missing ({', '.join(missing[:5])}) and "
            f"{len(extra)} unexpected ({', '.join(extra[:5])}); delete the file to recompute it"
        )
    ordered = emb[[index[i] for i in expected_ids]]
    bad = ~np.isfinite(ordered).all(axis=1)
    if bad.any():
        names = [expected_ids[i] for i in np.flatnonzero(bad)[:5]]
        raise WorkerError(f"{path}: non-finite embeddings for frames {', '.join(names)}")
    return ordered


def features_complete(path: Path, expected_ids: list[str]) -> bool:
    """True when ``path`` exists and passes :func:`load_features`; a bad file is removed."""
    if not path.exists():
        return False
    try:
        load_features(path, expected_ids)
    except (WorkerError, OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)
        return False
    return True


def nonfinite_rows(ids: list[str], emb: np.ndarray) -> list[str]:
    """IDs of the rows of ``emb`` holding a NaN or infinity (a worker checks before writing)."""
    bad = ~np.isfinite(emb).all(axis=1)
    return [ids[i] for i in np.flatnonzero(bad)]


def check_feature_ids(path: Path, expected_ids: list[str]) -> None:
    """The cheap end-of-stage proof: the file holds exactly ``expected_ids``, once each, and one
    row per ID (read from the array header, not the data). The worker checked every value for
    finiteness before writing; :func:`load_features` checks everything again where the rows are
    used (classify)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(x) for x in data["ids"]]
        with zipfile.ZipFile(path) as archive, archive.open("emb.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read_header(member)[0]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise WorkerError(f"{path}: feature file unreadable ({exc}); delete it to recompute it") from exc
    if len(shape) != 2 or shape[0] != len(ids):
        raise WorkerError(f"{path}: feature file is malformed ({shape} for {len(ids)} IDs)")
    if ids != expected_ids and sorted(ids) != sorted(expected_ids):
        missing = sorted(set(expected_ids) - set(ids))
        extra = sorted(set(ids) - set(expected_ids))
        raise WorkerError(
            f"{path}: {len(missing)} frame(s) missing ({', '.join(missing[:5])}) and "
            f"{len(extra)} unexpected or repeated ({', '.join(extra[:5])}); delete the file to recompute it"
        )
