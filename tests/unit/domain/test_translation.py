"""Six-frame translation and frame selection (REFERENCE §3)."""

from __future__ import annotations

import pytest
from Bio.Data.CodonTable import standard_dna_table
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro.domain.records import Chunk, Strand
from virnucpro.domain.translation import CODON_TABLE, reverse_complement, six_frames, translate


def _chunk(sequence: str, record_id: str = "r") -> Chunk:
    return Chunk(record_id=record_id, index=1, start=0, sequence=sequence)


def _naive_six_frames(sequence: str) -> list[tuple[str, str, str]]:
    """REFERENCE §3 written out with per-base loops: (frame ID suffix, dna, protein)."""
    forward = sequence.upper()
    complement = {"A": "T", "T": "A", "C": "G", "G": "C"}
    reverse = "".join(complement.get(base, base) for base in reversed(forward))
    kept = []
    for strand, x in (("F", forward), ("R", reverse)):
        for offset in range(3):
            protein = ""
            i = offset
            while len(x) - i >= 3:
                codon = x[i : i + 3]
                if all(base in "ACGT" for base in codon):
                    protein += CODON_TABLE[codon]
                i += 3
            if protein and "*" not in protein:
                kept.append(
                    (f"{strand}{offset + 1}", x[offset : offset + 3 * len(protein) + 1], protein)
                )
    return kept


# ------------------------------------------------------------------------------------ codon table
def test_codon_table_is_the_standard_code() -> None:
    expected = dict(standard_dna_table.forward_table)
    expected.update({codon: "*" for codon in standard_dna_table.stop_codons})
    assert dict(CODON_TABLE) == expected
    assert len(CODON_TABLE) == 64
    assert sorted(c for c, aa in CODON_TABLE.items() if aa == "*") == ["TAA", "TAG", "TGA"]


def test_codon_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CODON_TABLE["ATG"] = "X"  # type: ignore[index]


# ------------------------------------------------------------------------------------- translate
def test_translate_reads_while_three_bases_remain() -> None:
    assert translate("ATGAAATAG") == "MK*"
    assert translate("ATGAA") == "M"
    assert translate("AT") == ""
    assert translate("") == ""


def test_ambiguous_codons_are_dropped_not_x() -> None:
    assert translate("ATGNNNAAA") == "MK"
    assert translate("ATGANAAAA") == "MK"
    assert translate("RYKATG") == "M"
    assert translate("ATGUAA") == "M"  # U is not A/C/G/T: its codon is dropped


def test_translate_upper_cases_first() -> None:
    assert translate("atgaaatgg") == "MKW"


# ----------------------------------------------------------------------------- reverse complement
def test_reverse_complement_keeps_iupac_letters_as_the_original() -> None:
    assert reverse_complement("AACGTRYN") == "NYRACGTT"
    assert reverse_complement("acgtN") == "Nacgt"
    assert reverse_complement("") == ""


@given(st.text(alphabet="ACGTNRYKMSWBDHVacgtn"))
def test_reverse_complement_is_an_involution(sequence: str) -> None:
    assert reverse_complement(reverse_complement(sequence)) == sequence


# ------------------------------------------------------------------------------------ six frames
def test_frame_order_ids_and_strands() -> None:
    chunk = Chunk(record_id="contig", index=2, start=399, sequence="GCT" * 4)
    frames = six_frames(chunk)
    assert [f.id for f in frames] == [
        f"contig_chunk_2{s}" for s in ("F1", "F2", "F3", "R1", "R2", "R3")
    ]
    assert [f.strand for f in frames] == [Strand.FORWARD] * 3 + [Strand.REVERSE] * 3
    assert [f.offset for f in frames] == [0, 1, 2, 0, 1, 2]
    assert [f.protein for f in frames] == ["AAAA", "LLL", "CCC", "SSSS", "AAA", "QQQ"]
    assert all(f.chunk_id == "contig_chunk_2" and f.record_id == "contig" for f in frames)


def test_dna_is_one_base_longer_than_the_codons() -> None:
    sequence = "GCT" * 4 + "GC"  # 14 bp
    frames = {f.id[-2:]: f for f in six_frames(_chunk(sequence))}
    assert frames["F1"].dna == sequence[0:13]  # 4 codons -> 13 bases
    assert frames["F2"].dna == sequence[1:14]
    assert frames["F3"].dna == sequence[2:14]  # cut at the end of the chunk


def test_dna_span_with_dropped_codons_keeps_the_quirk() -> None:
    (f1,) = [f for f in six_frames(_chunk("ATGNNNAAAGGGCC")) if f.id.endswith("F1")]
    assert f1.protein == "MKG"
    assert f1.dna == "ATGNNNAAAG"  # 3p + 1 = 10 bases although 4 codons were read


def test_frames_with_a_stop_or_no_codon_are_dropped() -> None:
    assert [f.id[-2:] for f in six_frames(_chunk("ATGTAAATG"))] == ["F2", "F3", "R1", "R2", "R3"]
    assert [f.id[-2:] for f in six_frames(_chunk("TTACAT"))] == ["F1", "F2", "F3", "R2", "R3"]
    assert six_frames(_chunk("NNNNNNNNN")) == []
    assert six_frames(_chunk("AC")) == []


def test_chunk_is_upper_cased_first() -> None:
    lower = six_frames(_chunk("gctgctgctgcta"))
    upper = six_frames(_chunk("GCTGCTGCTGCTA"))
    assert lower == upper
    assert lower[0].dna.isupper()


@settings(deadline=None, max_examples=300)
@given(st.text(alphabet="ACGTACGTACGTNRYacgt", max_size=60))
def test_six_frames_matches_the_naive_reference(sequence: str) -> None:
    frames = six_frames(_chunk(sequence))
    assert [(f.id[-2:], f.dna, f.protein) for f in frames] == _naive_six_frames(sequence)


@settings(deadline=None, max_examples=100)
@given(st.text(alphabet="GCTAN", min_size=100, max_size=500))
def test_kept_frames_are_stop_free_and_non_empty(sequence: str) -> None:
    for frame in six_frames(_chunk(sequence)):
        assert frame.protein and "*" not in frame.protein
        strand = (
            sequence.upper()
            if frame.strand is Strand.FORWARD
            else reverse_complement(sequence.upper())
        )
        assert frame.dna == strand[frame.offset : frame.offset + 3 * len(frame.protein) + 1]
