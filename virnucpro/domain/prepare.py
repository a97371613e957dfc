"""From input records to chunks and kept frames; the original's three prepared FASTA files.

:func:`iter_frames` is the streaming core the pipeline uses: per input record, its chunks and each
chunk's kept frames, without writing anything. :func:`prepare_files` writes the same content as the
original's files, byte for byte:

- ``<stem>_chunked<L>.fa``: every chunk, ``>chunk_id`` then the sequence (case preserved) in lines
  of 60, as Biopython's ``SeqIO.write`` writes it;
- ``<stem>_identified_nucleotide.fa`` / ``<stem>_identified_protein.faa``: one record per kept
  frame, in input-record, chunk, F1..R3 order, ``>frame_id`` then the DNA or protein on a single
  line.

The three files are written atomically together: if anything fails (an :class:`InputError` half-way
through the input, a full disk), none of them is left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.fasta import format_fasta_record, read_fasta
from virnucpro.domain.outputs import PreparedFiles, prepared_paths
from virnucpro.domain.record_frames import records_chunk_frames
from virnucpro.domain.records import Chunk, Frame, SequenceRecord

__all__ = [
    "BATCH_BASES",
    "CHUNK_FILE_WRAP",
    "ChunkFrames",
    "RecordFrames",
    "PreparedFiles",
    "iter_frames",
    "prepare_files",
]

CHUNK_FILE_WRAP = 60
"""Line width of the chunk file (Biopython's FASTA writer)."""

BATCH_BASES = 1 << 20
"""Bases translated together by :func:`iter_frames` (about 10 MB of working memory)."""


@dataclass(frozen=True, slots=True)
class ChunkFrames:
    """One chunk and its kept frames (possibly none), in F1, F2, F3, R1, R2, R3 order."""

    chunk: Chunk
    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class RecordFrames:
    """One input record reduced to what the pipeline needs: its ID, length, chunks and frames."""

    record_id: str
    length: int
    chunks: tuple[ChunkFrames, ...]

    @property
    def frames(self) -> tuple[Frame, ...]:
        """Every kept frame of the record, in identified-file order."""
        return tuple(frame for chunk in self.chunks for frame in chunk.frames)

    @property
    def n_frames(self) -> int:
        return sum(len(chunk.frames) for chunk in self.chunks)


def iter_frames(records: Iterable[SequenceRecord], chunk_length: int) -> Iterator[RecordFrames]:
    """Chunk and six-frame-translate each record, lazily, in input order.

    Records are translated in groups of about :data:`BATCH_BASES` bases with the whole-record
    translation of :mod:`virnucpro.domain.record_frames`, whose output is that of
    ``chunk_sequence`` + ``six_frames`` per chunk (the scalar reference). An input error raised by
    ``records`` half-way still surfaces before anything past the group is yielded.
    """
    group: list[SequenceRecord] = []
    bases = 0
    for record in records:
        group.append(record)
        bases += len(record.sequence)
        if bases >= BATCH_BASES:
            yield from _frames_of_group(group, chunk_length)
            group, bases = [], 0
    if group:
        yield from _frames_of_group(group, chunk_length)


def _frames_of_group(group: list[SequenceRecord], chunk_length: int) -> Iterator[RecordFrames]:
    translated = records_chunk_frames([(r.id, r.sequence) for r in group], chunk_length)
    for record, chunks in zip(group, translated, strict=True):
        yield RecordFrames(
            record_id=record.id,
            length=len(record.sequence),
            chunks=tuple(ChunkFrames(chunk, frames) for chunk, frames in chunks),
        )


def prepare_files(
    input_path: str | os.PathLike[str],
    chunk_length: int,
    output_dir: str | os.PathLike[str],
) -> PreparedFiles:
    """Write the original's chunk and identified files for ``input_path`` into ``output_dir``.

    Raises :class:`~virnucpro.errors.InputError` for an unusable input (no file is written then).
    """
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = prepared_paths(directory, input_path, chunk_length)
    with contextlib.ExitStack() as stack:
        chunk_out = stack.enter_context(atomic_open(paths.chunked))
        dna_out = stack.enter_context(atomic_open(paths.nucleotide))
        protein_out = stack.enter_context(atomic_open(paths.protein))
        for record in iter_frames(read_fasta(input_path), chunk_length):
            for chunk_frames in record.chunks:
                chunk = chunk_frames.chunk
                chunk_out.write(format_fasta_record(chunk.id, chunk.sequence, CHUNK_FILE_WRAP))
                for frame in chunk_frames.frames:
                    frame_id = frame.id
                    dna_out.write(f">{frame_id}\n{frame.dna}\n")
                    protein_out.write(f">{frame_id}\n{frame.protein}\n")
    return paths
