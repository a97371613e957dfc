"""Typed records passed between stages."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["SequenceRecord", "Chunk", "Strand", "Frame", "FrameScore"]


@dataclass(frozen=True, slots=True)
class SequenceRecord:
    """One FASTA record: ``id`` is the first whitespace-separated token of the header."""

    id: str
    description: str
    sequence: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk of a record (REFERENCE §2). ``index`` is 1-based, as in the chunk ID."""

    record_id: str
    index: int
    start: int
    sequence: str

    @property
    def id(self) -> str:
        return f"{self.record_id}_chunk_{self.index}"


class Strand(enum.Enum):
    FORWARD = "F"
    REVERSE = "R"


@dataclass(frozen=True, slots=True)
class Frame:
    """A kept (stop-free, non-empty) reading frame of a chunk (REFERENCE §3).

    ``dna`` is exactly the string the original sent to DNABERT-S (one base more than the codons);
    ``protein`` the string sent to ESM-2. ``offset`` is 0..2; the ID suffix is offset + 1.
    """

    record_id: str
    chunk_id: str
    strand: Strand
    offset: int
    dna: str
    protein: str

    @property
    def id(self) -> str:
        return f"{self.chunk_id}{self.strand.value}{self.offset + 1}"


@dataclass(frozen=True, slots=True)
class FrameScore:
    """Classifier output for one frame: P(others) and P(virus), as float32 values."""

    frame_id: str
    score_others: float
    score_virus: float
