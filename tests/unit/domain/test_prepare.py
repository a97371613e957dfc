"""From records to frames, and the prepared files (the golden comparison is an integration test)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnucpro.domain.prepare import iter_frames, prepare_files
from virnucpro.domain.records import SequenceRecord
from virnucpro.errors import InputError


def test_iter_frames_per_record() -> None:
    records = [SequenceRecord("a", "desc", "GCT" * 400), SequenceRecord("b", "", "TTAA" * 10)]
    a, b = iter_frames(records, 500)
    assert (a.record_id, a.length, len(a.chunks)) == ("a", 1200, 3)
    assert [c.chunk.id for c in a.chunks] == ["a_chunk_1", "a_chunk_2", "a_chunk_3"]
    assert a.n_frames == len(a.frames) == 18
    assert a.frames[0].id == "a_chunk_1F1" and a.frames[-1].id == "a_chunk_3R3"
    assert (b.record_id, b.length, len(b.chunks), b.frames) == ("b", 40, 1, ())


def test_prepare_files_content(tmp_path: Path) -> None:
    source = tmp_path / "in.fasta.gz"
    source.write_bytes(gzip.compress(b">s1 some description\n" + b"gct" * 30 + b"\n"))
    out = prepare_files(source, 500, tmp_path / "out")
    assert out.chunked == tmp_path / "out" / "in_chunked500.fa"
    assert out.chunked.read_text() == ">s1_chunk_1\n" + "gct" * 20 + "\n" + "gct" * 10 + "\n"
    nucleotide = out.nucleotide.read_text().splitlines()
    protein = out.protein.read_text().splitlines()
    assert (
        nucleotide[0::2]
        == protein[0::2]
        == [f">s1_chunk_1{s}" for s in ("F1", "F2", "F3", "R1", "R2", "R3")]
    )
    assert nucleotide[1] == ("GCT" * 30)[:91] and protein[1] == "A" * 30


def test_prepare_files_leaves_nothing_on_error(tmp_path: Path) -> None:
    source = tmp_path / "bad.fa"
    source.write_text(">a\n" + "ACGT" * 300 + "\n>b\nACGT\n>a\nACGT\n")
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match="appears 2 times"):
        prepare_files(source, 300, out_dir)
    assert list(out_dir.iterdir()) == []
