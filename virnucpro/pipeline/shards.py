"""Work units on disk: frame shards in, feature and score files out.

A shard is a UTF-8 TSV of frames (ID, record, chunk, DNA, protein; IDs exactly as the input holds
them). Workers write one feature file per shard and stage (``.npz`` with ``ids`` and ``emb``),
atomically, so a file that exists is complete; :func:`load_features` checks it (IDs exactly the
shard's, every value finite) before it is used. Finished shards are therefore never recomputed on
resume, and a bad file is recomputed, not used: :func:`features_complete` treats a file that fails
to load (truncated, empty, not an ``.npz``, wrong IDs, non-finite values) as missing, logs why and
removes it; :func:`prepared_problem` says why a preparation's shards or ``records.tsv`` are not
what it wrote (:mod:`~virnucpro.pipeline.prepared_manifest` adds each prepared file's size and
SHA-256).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.disk import disk_errors
from virnucpro.domain.records import Frame
from virnucpro.errors import OutputError, WorkerError

__all__ = [
    "Shard",
    "ShardFrame",
    "write_shard",
    "read_shard",
    "iter_shard_ids",
    "prepared_problem",
    "check_work_dir",
    "save_features",
    "load_features",
    "features_complete",
    "check_feature_ids",
    "nonfinite_rows",
    "protein_tokens",
]

logger = logging.getLogger(__name__)

_ENCODING = "utf-8"
_SHARD_FIELDS = 5
_DAMAGED = ". The work file is damaged; re-run (the preparation is redone)."


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

    @property
    def id(self) -> str:
        """The frame ID (as :class:`~virnucpro.domain.records.Frame` names it): a shard's rows
        can be written again with :func:`write_shard`."""
        return self.frame_id


def protein_tokens(protein: str) -> int:
    """ESM-2 tokens of a protein: BOS + residues (truncated at 1024) + EOS."""
    return min(len(protein), 1024) + 2


def write_shard(path: Path, shard_id: int, frames: Iterable[Frame | ShardFrame]) -> Shard:
    """Write frames as a shard file atomically and describe it."""
    n_frames = 0
    n_tokens = 0
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding=_ENCODING) as handle:
        for frame in frames:
            handle.write(
                f"{frame.id}\t{frame.record_id}\t{frame.chunk_id}\t{frame.dna}\t{frame.protein}\n"
            )
            n_frames += 1
            n_tokens += protein_tokens(frame.protein)
    return Shard(shard_id=shard_id, path=path, n_frames=n_frames, n_tokens=n_tokens)


def read_shard(path: Path) -> list[ShardFrame]:
    """The frames of a shard; :class:`WorkerError` naming the file and line if it is not one."""
    return [ShardFrame(*fields) for fields in _iter_shard_fields(path)]


def iter_shard_ids(path: Path) -> Iterator[str]:
    """The frame IDs of a shard, in order (a bad shard raises as :func:`read_shard` does)."""
    for fields in _iter_shard_fields(path):
        yield fields[0]


def _iter_shard_fields(path: Path) -> Iterator[list[str]]:
    # newline="\n": only LF ends a row, so no character of an ID can split one
    with open(path, encoding=_ENCODING, newline="\n") as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != _SHARD_FIELDS or not line.endswith("\n") or not all(fields):
                    raise WorkerError(
                        _bad_shard(path, f"line {line_no} is not a frame row ({len(fields)} fields)")
                    )
                yield fields
        except UnicodeDecodeError as exc:
            raise WorkerError(_bad_shard(path, f"not UTF-8 text after line {line_no}")) from exc


def _bad_shard(path: Path, why: str) -> str:
    return (
        f"{path}: not a frame shard: {why}; expected {_SHARD_FIELDS} tab-separated fields per "
        f"line{_DAMAGED}"
    )


def prepared_problem(shards: Iterable[Shard], records: Path, n_records: int) -> str | None:
    """Why an earlier preparation cannot be reused, or None: ``records`` (one line per input
    record: ID, length, chunks) or a shard is missing, unreadable, or not what was prepared."""
    try:
        with open(records, encoding=_ENCODING, newline="\n") as handle:
            rows = [line.rstrip("\n").split("\t") for line in handle]
    except FileNotFoundError:
        return f"{records} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{records} is unreadable ({exc})"
    if len(rows) != n_records or not all(
        len(r) == 3 and r[0] and _is_count(r[1]) and _is_count(r[2]) for r in rows
    ):
        return f"{records} does not list the {n_records} prepared records"
    for shard in shards:
        try:
            frames = read_shard(shard.path)
        except FileNotFoundError:
            return f"{shard.path} is missing"
        except (OSError, WorkerError) as exc:
            return str(exc).removesuffix(_DAMAGED)
        tokens = sum(protein_tokens(f.protein) for f in frames)
        if len(frames) != shard.n_frames or tokens != shard.n_tokens:
            return (
                f"{shard.path} holds {len(frames)} frames ({tokens} tokens), not the "
                f"{shard.n_frames} ({shard.n_tokens}) prepared"
            )
    return None


def check_work_dir(work_dir: Path) -> None:
    """Raise :class:`OutputError` if ``work_dir`` exists as a symbolic link or a non-directory.

    Work files are written, and removed, only in a real directory of the output directory: a
    link is never followed (a removal would reach wherever it points).
    """
    if work_dir.is_symlink():
        raise OutputError(
            f"{work_dir} is a symbolic link (to {os.readlink(work_dir)}); VirNucPro keeps its work "
            f"files in a real directory there and never follows a link. Remove the link "
            f"(rm {work_dir}) or choose another --output-dir, and re-run."
        )
    if work_dir.exists() and not work_dir.is_dir():
        raise OutputError(
            f"{work_dir} exists and is not a directory; VirNucPro keeps its work files there. "
            "Remove it or choose another --output-dir, and re-run."
        )


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()


def save_features(path: Path, ids: list[str], emb: np.ndarray) -> None:
    """Write a feature file atomically (temp file, fsync, rename)."""
    id_array = np.asarray(ids, dtype=str)
    values = np.asarray(emb, dtype=np.float32)
    with disk_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", size=id_array.nbytes + values.nbytes + 1024) as handle:
        np.savez(handle, ids=id_array, emb=values)


class _Unusable(Exception):
    """A work file that cannot be used; the message says why (without the path)."""


def _read_features(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(x) for x in data["ids"]]
            emb = np.asarray(data["emb"], dtype=np.float32)
    except FileNotFoundError:
        raise
    except Exception as exc:  # any bytes can be on disk; numpy and zipfile raise many kinds
        raise _Unusable(f"unreadable ({type(exc).__name__}: {exc})") from exc
    return ids, emb


def _checked_rows(path: Path, expected_ids: list[str]) -> np.ndarray:
    ids, emb = _read_features(path)
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise _Unusable(f"malformed ({emb.shape} for {len(ids)} IDs)")
    index = {frame_id: row for row, frame_id in enumerate(ids)}
    if len(index) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise _Unusable(f"frame IDs returned twice: {', '.join(dupes)}")
    missing = [i for i in expected_ids if i not in index]
    extra = sorted(set(index) - set(expected_ids))
    if missing or extra:
        raise _Unusable(
            f"{len(missing)} frame(s) missing ({', '.join(missing[:5])}) and "
            f"{len(extra)} unexpected ({', '.join(extra[:5])})"
        )
    ordered = emb[[index[i] for i in expected_ids]]
    bad = ~np.isfinite(ordered).all(axis=1)
    if bad.any():
        names = [expected_ids[i] for i in np.flatnonzero(bad)[:5]]
        raise _Unusable(f"non-finite embeddings for frames {', '.join(names)}")
    return ordered


def load_features(path: Path, expected_ids: list[str]) -> np.ndarray:
    """Load a feature file and prove it holds exactly one finite row per expected ID, in order.

    Rows are re-ordered by ID (never trusted by position); an unreadable file, or any missing,
    extra, duplicated or non-finite row, raises :class:`WorkerError` naming the file and IDs.
    """
    try:
        return _checked_rows(path, expected_ids)
    except _Unusable as exc:
        raise WorkerError(f"{path}: {exc}; delete the file to recompute it") from exc


def features_complete(path: Path, expected_ids: list[str]) -> bool:
    """True when ``path`` exists and passes :func:`load_features`.

    A file that does not is treated as missing: logged (naming it and why), removed, and so
    recomputed by the stage. Never raises for what a file holds.
    """
    try:
        _checked_rows(path, expected_ids)
    except FileNotFoundError:
        return False
    except _Unusable as exc:
        logger.warning("%s: %s; recomputing it", path, exc)
        with disk_errors(path):
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
    except Exception as exc:  # any bytes can be on disk; numpy and zipfile raise many kinds
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
