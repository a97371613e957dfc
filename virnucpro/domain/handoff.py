"""``virus.fna`` and ``provirus.fna``: the called sequences, for the next tool (CheckV, annotation).

- ``virus.fna``: every input record called ``virus``, whole, in input order, under its input
  header (``>id description``: the ID and description as read, joined by one space).
- ``provirus.fna``: the subsequence of every ``provirus`` region (:mod:`virnucpro.domain.regions`),
  records in input order and regions along each record, named as geNomad names proviruses:
  ``>id|provirus_<start>_<end> description``, with ``start`` and ``end`` the region's first and
  last base (1-based, inclusive; the record's bases ``start`` to ``end``). ``whole`` regions are
  not repeated here: they are the records of ``virus.fna``.

Sequences are written as in the input (case kept) in lines of 60 letters (:data:`FASTA_WRAP`, as
the chunk file and Biopython write FASTA). The input is streamed once more, one record in memory
at a time: through :func:`~virnucpro.domain.fasta.read_fasta`, or, given the SHA-256 the run
recorded for it, through :func:`~virnucpro.domain.fasta_reread.reread_fasta` (the same records,
read faster while the file is unchanged); both files are written atomically together (neither
appears if anything fails). A record or region that the input no longer has (the file changed
since the run) raises :class:`~virnucpro.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.fasta import format_fasta_record, read_fasta
from virnucpro.domain.fasta_reread import reread_fasta
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.errors import InputError

__all__ = ["FASTA_WRAP", "HandoffCounts", "provirus_id", "write_handoff_fasta"]

FASTA_WRAP = 60
_MAX_LISTED = 5


@dataclass(frozen=True, slots=True)
class HandoffCounts:
    """How many records each file got."""

    n_virus: int
    n_provirus: int


def provirus_id(sequence_id: str, start: int, end: int) -> str:
    """The ID of a provirus region in ``provirus.fna``: ``<id>|provirus_<start>_<end>``."""
    return f"{sequence_id}|provirus_{start}_{end}"


def write_handoff_fasta(
    input_path: str | os.PathLike[str],
    *,
    virus_ids: Iterable[str],
    regions: Iterable[Region],
    virus_path: str | os.PathLike[str] | None,
    provirus_path: str | os.PathLike[str] | None,
    wrap: int = FASTA_WRAP,
    input_sha256: str | None = None,
) -> HandoffCounts:
    """Write ``virus.fna`` (records ``virus_ids``) and ``provirus.fna`` (the provirus ``regions``).

    ``input_sha256``: the input's checksum when the run read it (module docstring); ``None``
    reads it with the general reader. A path of ``None`` skips that file. Regions of kind
    ``whole`` are ignored (their records are in ``virus.fna``). Raises :class:`InputError` when ``input_path`` lacks a selected record or
    is shorter than a region (no file is written then).
    """
    wanted = set(virus_ids) if virus_path is not None else set()
    by_record: dict[str, list[Region]] = {}
    if provirus_path is not None:
        for region in regions:
            if region.kind is RegionKind.PROVIRUS:
                by_record.setdefault(region.sequence_id, []).append(region)
    n_virus = n_provirus = 0
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        virus_out = _open(stack, virus_path)
        provirus_out = _open(stack, provirus_path)
        records = read_fasta(input_path) if input_sha256 is None else reread_fasta(input_path, input_sha256)
        for record in records:
            is_virus = record.id in wanted
            record_regions = by_record.get(record.id, ())
            if not is_virus and not record_regions:
                continue
            seen.add(record.id)
            suffix = f" {record.description}" if record.description else ""
            if is_virus and virus_out is not None:
                virus_out.write(format_fasta_record(record.id + suffix, record.sequence, wrap))
                n_virus += 1
            for region in record_regions if provirus_out is not None else ():
                if region.end > len(record.sequence) or region.start < 1:
                    raise InputError(
                        f"{input_path}: record '{record.id}' has {len(record.sequence)} bp, but "
                        f"the run found a region at {region.start}-{region.end}; the input "
                        "changed since the run. Re-run predict on this input."
                    )
                header = provirus_id(record.id, region.start, region.end) + suffix
                subsequence = record.sequence[region.start - 1 : region.end]
                provirus_out.write(format_fasta_record(header, subsequence, wrap))
                n_provirus += 1
        missing = sorted((wanted | set(by_record)) - seen)
        if missing:
            shown = ", ".join(f"'{m}'" for m in missing[:_MAX_LISTED])
            more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise InputError(
                f"{input_path}: has no record {shown}{more}, which the run called; the input "
                "changed since the run. Re-run predict on this input."
            )
    return HandoffCounts(n_virus=n_virus, n_provirus=n_provirus)


def _open(stack: contextlib.ExitStack[Any], path: str | os.PathLike[str] | None) -> IO[Any] | None:
    return None if path is None else stack.enter_context(atomic_open(path))
