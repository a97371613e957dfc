"""Chunks and kept frames of a whole record at once: the fast equivalent of chunk-by-chunk
:func:`~virnucpro.domain.translation.six_frames`.

The chunk-by-chunk path translates each chunk's strands codon by codon. Chunks of one record are
windows of the same two strands (the record, upper-cased, and its reverse complement), so this
module translates every position of each strand ONCE, with numpy:

- ``codon_at[i]`` is the amino acid of the codon starting at base ``i`` (``-`` for a codon with a
  letter other than A/C/G/T, which the original drops), built from the one codon table in
  :mod:`virnucpro.domain.translation`;
- frame ``o`` of a chunk ``[s, e)`` is then the strided slice ``codon_at[s + o : e - 2 : 3]`` of
  the forward strand, or ``codon_at[L - e + o : L - s - 2 : 3]`` of the reverse one: a C-level
  byte slice, no Python loop over bases or codons;
- a frame is kept iff its slice, with ``-`` removed, is non-empty and has no ``*``; its DNA is the
  chunk strand from ``o`` for ``3·len(protein) + 1`` bases, cut at the chunk's end (the original's
  off-by-one, measured on the protein AFTER dropping ambiguous codons, exactly as the scalar path).

The results are identical to the scalar path (tests compare both on random sequences with
ambiguity codes, short records and every chunk length edge); the scalar path stays the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from virnucpro.domain.chunking import chunk_sequence, chunk_starts
from virnucpro.domain.records import Chunk, Frame, Strand
from virnucpro.domain.translation import CODON_TABLE, STOP, reverse_complement, six_frames

__all__ = ["record_chunk_frames", "records_chunk_frames"]

_DROPPED = ord("-")
_INVALID = 4
_BASE_CODE = np.full(256, _INVALID, dtype=np.uint8)
for _code, _base in enumerate("ACGT"):
    _BASE_CODE[ord(_base)] = _code
# Codon index in base 5 (A, C, G, T, other): 125 entries, any "other" letter → dropped.
_AMINO_BY_CODON = np.full(125, _DROPPED, dtype=np.uint8)
for _codon, _amino in CODON_TABLE.items():
    _a, _b, _c = (int(_BASE_CODE[ord(base)]) for base in _codon)
    _AMINO_BY_CODON[25 * _a + 5 * _b + _c] = ord(_amino)
_STOP_BYTE = STOP.encode("ascii")
_DROPPED_BYTE = bytes([_DROPPED])


def _codon_amino_acids(strand: str) -> bytes:
    """Byte ``i`` is the amino acid of the codon at base ``i`` (``-`` if dropped); length L − 2.

    ``strand`` is ASCII (one byte per base).
    """
    if len(strand) < 3:
        return b""
    codes = _BASE_CODE[np.frombuffer(strand.encode("ascii"), dtype=np.uint8)].astype(np.uint8)
    index = codes[:-2] * np.uint8(25) + codes[1:-1] * np.uint8(5) + codes[2:]
    return _AMINO_BY_CODON[index].tobytes()


def record_chunk_frames(
    record_id: str, sequence: str, chunk_length: int
) -> list[tuple[Chunk, tuple[Frame, ...]]]:
    """Every chunk of one record with its kept frames, in chunk then F1..R3 order."""
    return records_chunk_frames([(record_id, sequence)], chunk_length)[0]


def records_chunk_frames(
    records: Sequence[tuple[str, str]], chunk_length: int
) -> list[list[tuple[Chunk, tuple[Frame, ...]]]]:
    """Per ``(record_id, sequence)``: every chunk with its kept frames, in chunk then F1..R3 order.

    Same chunks (case preserved) and frames as ``chunk_sequence`` followed by ``six_frames`` per
    chunk. The ASCII records' strands are translated together (one numpy pass per strand for the
    whole batch: numpy's per-call cost, not the bases, dominates single records of a few kbp); a
    codon is never read across two records because every slice stops 2 bases before its chunk's
    end. A record with a non-ASCII character (the FASTA reader never gives one; upper-casing may
    change its length) goes through the chunk-by-chunk reference instead.
    """
    ascii_records = [(rid, seq) for rid, seq in records if seq.isascii()]
    forwards = [sequence.upper() for _, sequence in ascii_records]
    reverses = [reverse_complement(forward) for forward in forwards]
    amino_forward = _codon_amino_acids("".join(forwards))
    amino_reverse = _codon_amino_acids("".join(reverses))
    strands = iter(zip(forwards, reverses, strict=True))
    result: list[list[tuple[Chunk, tuple[Frame, ...]]]] = []
    at = 0
    for record_id, sequence in records:
        if not sequence.isascii():
            result.append([
                (chunk, tuple(six_frames(chunk)))
                for chunk in chunk_sequence(record_id, sequence, chunk_length)
            ])
            continue
        forward, reverse = next(strands)
        result.append(
            _chunks_of(record_id, sequence, forward, reverse, chunk_length,
                       amino_forward, amino_reverse, at)
        )
        at += len(sequence)
    return result


def _chunks_of(
    record_id: str,
    sequence: str,
    forward: str,
    reverse: str,
    chunk_length: int,
    amino_forward: bytes,
    amino_reverse: bytes,
    at: int,
) -> list[tuple[Chunk, tuple[Frame, ...]]]:
    """One record's chunks; its strands start at base ``at`` of the batch's joined strands."""
    length = len(sequence)
    result: list[tuple[Chunk, tuple[Frame, ...]]] = []
    for k, start in enumerate(chunk_starts(length, chunk_length)):
        end = min(start + chunk_length, length)
        chunk_id = f"{record_id}_chunk_{k + 1}"
        frames: list[Frame] = []
        strands = (
            (Strand.FORWARD, amino_forward, forward, start),
            (Strand.REVERSE, amino_reverse, reverse, length - end),
        )
        for strand, strand_amino, strand_seq, first_base in strands if end - start >= 3 else ():
            strand_end = first_base + (end - start)
            last = at + strand_end - 2  # slice stop: the last codon starts 3 bases before the end
            for offset in range(3):
                protein_bytes = strand_amino[at + first_base + offset : last : 3]
                if _STOP_BYTE in protein_bytes:
                    continue
                if _DROPPED_BYTE in protein_bytes:
                    protein_bytes = protein_bytes.replace(_DROPPED_BYTE, b"")
                if not protein_bytes:
                    continue
                first = first_base + offset
                frames.append(
                    Frame(
                        record_id=record_id,
                        chunk_id=chunk_id,
                        strand=strand,
                        offset=offset,
                        dna=strand_seq[first : min(first + 3 * len(protein_bytes) + 1, strand_end)],
                        protein=protein_bytes.decode("ascii"),
                    )
                )
        result.append((Chunk(record_id, k + 1, start, sequence[start:end]), tuple(frames)))
    return result
