"""``prepared.json``: what the prepare stage wrote, from which input and settings, and what each of
its files must still be for a later run to reuse them.

The manifest holds the resume key (:class:`PrepareKey`: the input's SHA-256, the chunk length,
the shard size, the shard layout's version), the counts, the shard list, and the size and SHA-256
of every prepared work file (``records.tsv``, ``descriptions.tsv``, each frame shard), taken from
the files as written. A resumed run reuses the preparation only if every one of them is there,
readable as what it is (:func:`~virnucpro.pipeline.shards.prepared_problem`) and of the recorded
size and SHA-256, and the manifest's own counts of chunks and frames are those of its files
(:meth:`PreparedManifest.problem`); otherwise the prepare stage logs which file and why, and
prepares again. A file emptied, truncated, deleted or edited after a run (disk
trouble, a user's tool) is therefore never used: without the digests, an emptied
``descriptions.tsv`` gave every table an empty description column, an edited ``records.tsv`` wrong
lengths, an edited shard features of another sequence.

Preparing again keeps the finished feature and score files: the same input and settings give the
same shards (same frame IDs, same sequences), every feature file is checked against its shard's
IDs where it is used, and a run checks the shards before any feature is computed from them.

A manifest without digests (written by a version before them; a work directory prepared before
``descriptions.tsv`` existed has neither) cannot prove its files, so it is prepared again too,
its features kept: reusing it would publish tables without the input's descriptions, and preparing
costs one streaming pass over the input, not the feature stages. An unreadable manifest, or one
without a readable key, cannot tell what was prepared: nothing in the work directory is reused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.checksums import FileDigest, file_digest
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.shards import Shard, prepared_problem

__all__ = [
    "LAYOUT_VERSION",
    "PrepareKey",
    "PreparedManifest",
    "ManifestError",
    "read_manifest",
    "prepared_files",
    "changed_files",
]

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
"""The shard layout's version, part of the key: another layout is another preparation, and the
work made from it is removed with it. Recording the files' digests did not change the layout."""


class ManifestError(ValueError):
    """``prepared.json`` is not a preparation record; the message says why."""


@dataclass(frozen=True, slots=True)
class PrepareKey:
    """What a preparation is made from: the same key, the same shards."""

    input_sha256: str
    chunk_length: int
    shard_frames: int
    version: int = LAYOUT_VERSION

    def matches(self, data: Mapping[str, Any]) -> bool:
        """``data`` (a manifest's JSON object) was prepared under this key."""
        return all(data.get(k) == v for k, v in asdict(self).items())


def prepared_files(paths: OutputPaths, shards: Iterable[Shard]) -> Iterator[Path]:
    """Every file a preparation writes in the work directory, in the manifest's order."""
    yield paths.records
    yield paths.descriptions
    for shard in shards:
        yield shard.path


def _name(paths: OutputPaths, path: Path) -> str:
    return path.relative_to(paths.work_dir).as_posix()


@dataclass(frozen=True, slots=True)
class PreparedManifest:
    """One preparation: its key, counts, shards and the digest of each file, by its path in the
    work directory (empty: written before digests were recorded)."""

    key: PrepareKey
    input: str
    n_records: int
    n_chunks: int
    n_frames: int
    shards: tuple[Shard, ...]
    files: tuple[tuple[str, FileDigest], ...] = ()

    @classmethod
    def of_written(cls, paths: OutputPaths, key: PrepareKey, input_path: Path, n_records: int,
                   n_chunks: int, n_frames: int, shards: Iterable[Shard]) -> PreparedManifest:
        """The manifest of files just written: each one's size and SHA-256 read from disk."""
        shards = tuple(shards)
        files = tuple((_name(paths, p), file_digest(p)) for p in prepared_files(paths, shards))
        return cls(key, str(input_path), n_records, n_chunks, n_frames, shards, files)

    def write(self, path: Path) -> None:
        data = dict(
            asdict(self.key),
            input=self.input,
            n_records=self.n_records,
            n_chunks=self.n_chunks,
            n_frames=self.n_frames,
            shards=[{"shard_id": s.shard_id, "file": s.path.name, "n_frames": s.n_frames,
                     "n_tokens": s.n_tokens} for s in self.shards],
            files={name: {"size": d.size, "sha256": d.sha256} for name, d in self.files},
        )
        atomic_write_text(path, json.dumps(data, indent=1))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], paths: OutputPaths) -> PreparedManifest:
        """The manifest ``data`` records; :class:`ManifestError` naming what is malformed."""
        try:
            key = PrepareKey(**{k: data[k] for k in ("input_sha256", "chunk_length", "shard_frames", "version")})
            shards = tuple(
                Shard(_int(s["shard_id"]), paths.shards_dir / _file_name(s["file"]), _int(s["n_frames"]),
                      _int(s["n_tokens"]))
                for s in data["shards"]
            )
            files = tuple(
                (str(name), FileDigest(_int(d["size"]), _hex(d["sha256"])))
                for name, d in data.get("files", {}).items()
            )
            return cls(key, str(data.get("input", "")), _int(data["n_records"]), _int(data["n_chunks"]),
                       _int(data["n_frames"]), shards, files)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{type(exc).__name__}: {exc}") from exc

    def problem(self, paths: OutputPaths) -> str | None:
        """Why this preparation cannot be reused, or None: a file missing, unreadable, not what it
        should hold, or not of the recorded size and SHA-256; no digests recorded at all; or
        counts of chunks and frames that are not its files'."""
        structural = prepared_problem(self.shards, paths.records, self.n_records)
        if structural is not None:
            return structural
        if not self.files:
            return (f"{paths.manifest} records no size and SHA-256 of the prepared files (written by an "
                    "earlier version)")
        changed = changed_files(paths, self.shards, self.files)
        if changed:
            return changed[0][1]
        # the manifest's own counts (run_info.json and the report show them): those of its files
        with open(paths.records, encoding="utf-8", newline="\n") as handle:
            chunks = sum(int(line.split("\t")[2]) for line in handle)
        frames = sum(s.n_frames for s in self.shards)
        if (chunks, frames) != (self.n_chunks, self.n_frames):
            return (f"{paths.manifest} counts {self.n_chunks} chunks and {self.n_frames} frames, but its "
                    f"files hold {chunks} and {frames}")
        return None


def changed_files(paths: OutputPaths, shards: Iterable[Shard],
                  files: Iterable[tuple[str, FileDigest]]) -> list[tuple[Path, str]]:
    """Each prepared file (:func:`prepared_files`) that is not of its recorded size and SHA-256,
    with why (missing, unreadable, another size, another SHA-256, none recorded)."""
    recorded = dict(files)
    changed: list[tuple[Path, str]] = []
    for path in prepared_files(paths, shards):
        why = _file_problem(path, recorded.get(_name(paths, path)), paths.manifest)
        if why is not None:
            changed.append((path, why))
    return changed


def _file_problem(path: Path, recorded: FileDigest | None, manifest: Path) -> str | None:
    if recorded is None:
        return f"{manifest} records no size and SHA-256 of {path}"
    try:
        now = file_digest(path)
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as exc:
        return f"{path} is unreadable ({exc})"
    if now.size != recorded.size:
        return (f"{path} is {now.size} bytes, not the {recorded.size} prepared (emptied, truncated or "
                "rewritten since)")
    if now.sha256 != recorded.sha256:
        return f"{path} is not the file prepared (its SHA-256 changed since; same size)"
    return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """``prepared.json``'s JSON object; None when there is none. :class:`ManifestError` when the
    file is there but unreadable or not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"unreadable ({exc})") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"a JSON {type(data).__name__}, not an object")
    return data


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _hex(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"{value!r} is not a SHA-256")
    return value


def _file_name(value: Any) -> str:
    """A shard's file name: a plain name in the shards folder (never a path out of it)."""
    if not isinstance(value, str) or not value or Path(value).name != value or value in (".", ".."):
        raise ValueError(f"{value!r} is not a shard file name")
    return value
