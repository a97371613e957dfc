"""Every record's chunk-score track, from the run's record list and its frame scores.

The report stage builds the tracks from the work files (``records.tsv``, ``descriptions.tsv``,
the score shards); ``report.html`` builds the same tracks from the written tables
(``prediction_sequences.tsv``, ``prediction_results.txt``). Both go through :func:`iter_tracks`.

``descriptions.tsv`` (``ID<TAB>description``, one line per record whose FASTA header has a
description; tabs and line breaks of a description become spaces) is written by the prepare stage
beside ``records.tsv``, and ``prepared.json`` records its size and SHA-256 like every prepared
file's (:mod:`~virnucpro.pipeline.prepared_manifest`). A run reads it only after its prepare step
has written or checked it: one emptied, truncated, edited or deleted since is prepared again, never
read as "no descriptions". A work directory prepared before it existed has none and no digests
either, so it is prepared again as well (its features kept): reading it as it is would give every
table an empty description column although the input has descriptions. So a missing file is an
error for :func:`read_descriptions`, never "no descriptions".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.calls import CalledChunk, RecordTrack, track_from_calls
from virnucpro.domain.outputs import OutputPaths

__all__ = [
    "RecordRow",
    "one_line",
    "write_descriptions",
    "read_descriptions",
    "read_records",
    "iter_tracks",
]


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One input record as the pipeline lists it: ID, length, number of chunks, description."""

    record_id: str
    length: int
    n_chunks: int
    description: str = ""


def one_line(text: str) -> str:
    """``text`` with tabs and line breaks as spaces (one field of a tab-separated line)."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_descriptions(path: str | os.PathLike[str], pairs: Iterable[tuple[str, str]]) -> None:
    """Write ``descriptions.tsv`` from ``(record ID, description)`` pairs (empty ones left out)."""
    atomic_write_text(path, "".join(f"{rid}\t{one_line(d)}\n" for rid, d in pairs if d))


def read_descriptions(path: str | os.PathLike[str]) -> dict[str, str]:
    """``descriptions.tsv`` as ``{record ID: description}`` (:class:`FileNotFoundError` when there is
    none: see the module docstring)."""
    text = Path(path).read_text(encoding="utf-8")
    pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return {record_id: description for record_id, description in pairs}


def read_records(paths: OutputPaths) -> Iterator[RecordRow]:
    """The prepared records (``records.tsv``) with their descriptions, in input order."""
    descriptions = read_descriptions(paths.descriptions)
    with open(paths.records, encoding="utf-8", newline="\n") as handle:
        for line in handle:
            record_id, length, n_chunks = line.rstrip("\n").split("\t")[:3]
            yield RecordRow(record_id, int(length), int(n_chunks), descriptions.get(record_id, ""))


def iter_tracks(
    rows: Iterable[RecordRow], chunks: Mapping[str, CalledChunk], chunk_length: int
) -> Iterator[RecordTrack]:
    """The track of each record of ``rows`` from the run's called chunks
    (:func:`~virnucpro.domain.calls.call_chunk_frames` of its frame scores)."""
    for row in rows:
        yield track_from_calls(row.record_id, row.length, chunks, chunk_length=chunk_length,
                               description=row.description)
