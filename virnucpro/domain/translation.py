"""Six-frame translation and frame selection exactly as the original (REFERENCE §3).

This module holds the package's ONE codon table (the standard genetic code, ``*`` for stops).

- :func:`reverse_complement` swaps A↔T and C↔G and keeps every other letter as it is (an ``R`` stays
  ``R``, it does not become ``Y``): that is what the original does, and the reverse-strand DNA sent
  to DNABERT-S must match it byte for byte. Lower-case ``a c g t`` are complemented too (to
  lower case), which never matters for the pipeline because chunks are upper-cased first.
- :func:`translate` reads codons from the start while at least 3 bases remain; a codon with any
  letter other than ``A C G T`` (``N``, ``R``, ``U`` …) is DROPPED from the protein (no ``X``).
- :func:`six_frames` upper-cases the chunk, translates offsets 0, 1, 2 of the chunk (``F1..F3``) and
  of its reverse complement (``R1..R3``), and keeps a frame iff its protein is non-empty and has no
  stop. Its DNA is ``x[o : o + 3p + 1]`` (one base more than the codons: the original's off-by-one,
  kept because the classifier was trained on it).

Speed: the stop codons of a strand are found with one regular-expression scan (stop codons never
overlap, so every match is one in-frame stop of frame ``start % 3``); only stop-free frames, a small
minority, are translated, two codons per dictionary look-up (a table of the 4096 hexamers built
from the 64 codons). There is no per-base Python loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from virnucpro.domain.records import Chunk, Frame, Strand

__all__ = [
    "CODON_TABLE",
    "STOP",
    "reverse_complement",
    "translate",
    "six_frames",
]

STOP = "*"

_BASES = "TCAG"
_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"

CODON_TABLE: Mapping[str, str] = MappingProxyType(
    {
        a + b + c: _AMINO_ACIDS[16 * i + 4 * j + k]
        for i, a in enumerate(_BASES)
        for j, b in enumerate(_BASES)
        for k, c in enumerate(_BASES)
    }
)
"""The standard genetic code (NCBI table 1): 64 upper-case DNA codons → one-letter amino acid."""


class _DroppingTable(dict[str, str]):
    """The codon table, answering ``""`` for any codon that is not made of A/C/G/T."""

    def __missing__(self, codon: str) -> str:
        return ""


class _DroppingHexamerTable(dict[str, str]):
    """Two codons at a time: 4096 A/C/G/T hexamers → two amino acids; others computed per codon."""

    def __missing__(self, hexamer: str) -> str:
        return _TABLE[hexamer[:3]] + _TABLE[hexamer[3:]]


_TABLE = _DroppingTable(CODON_TABLE)
_HEXAMER_TABLE = _DroppingHexamerTable(
    {
        first + second: CODON_TABLE[first] + CODON_TABLE[second]
        for first in CODON_TABLE
        for second in CODON_TABLE
    }
)
_HEXAMER = re.compile(r"......", re.DOTALL)
_STOP_CODON = re.compile(r"TA[AG]|TGA")
_COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")
_STRANDS = (Strand.FORWARD, Strand.REVERSE)


def reverse_complement(sequence: str) -> str:
    """The original's reverse complement: A↔T, C↔G (either case); other letters kept, reversed."""
    return sequence.translate(_COMPLEMENT)[::-1]


def translate(sequence: str) -> str:
    """Translate from the first base (upper-cased), ``*`` for stops, ambiguous codons dropped."""
    return _translate_upper(sequence.upper(), 0)


def six_frames(chunk: Chunk) -> list[Frame]:
    """The kept frames of ``chunk`` in the order F1, F2, F3, R1, R2, R3 (see module docstring)."""
    forward = chunk.sequence.upper()
    chunk_id = chunk.id
    frames: list[Frame] = []
    for strand, strand_sequence in zip(
        _STRANDS, (forward, reverse_complement(forward)), strict=True
    ):
        stopped = _offsets_with_stop(strand_sequence)
        for offset in range(3):
            if offset in stopped:
                continue
            protein = _translate_upper(strand_sequence, offset)
            if not protein:
                continue
            frames.append(
                Frame(
                    record_id=chunk.record_id,
                    chunk_id=chunk_id,
                    strand=strand,
                    offset=offset,
                    dna=strand_sequence[offset : offset + 3 * len(protein) + 1],
                    protein=protein,
                )
            )
    return frames


def _translate_upper(sequence: str, offset: int) -> str:
    """Translate upper-case ``sequence`` from ``offset``; codons not of A/C/G/T are dropped.

    Reads two codons per step (a hexamer dictionary), then the last odd codon if there is one.
    """
    protein = "".join(map(_HEXAMER_TABLE.__getitem__, _HEXAMER.findall(sequence, offset)))
    tail = offset + 6 * ((len(sequence) - offset) // 6)
    if len(sequence) - tail >= 3:
        protein += _TABLE[sequence[tail : tail + 3]]
    return protein


def _offsets_with_stop(sequence: str) -> set[int]:
    """The reading-frame offsets (0..2) of ``sequence`` that contain an in-frame stop codon."""
    found: set[int] = set()
    for match in _STOP_CODON.finditer(sequence):
        found.add(match.start() % 3)
        if len(found) == 3:
            break
    return found
