"""reread_fasta: the block reader gives exactly read_fasta's records on every file read_fasta accepts."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import virnucpro.domain.fasta_reread as fasta_reread
from virnucpro.domain.checksums import sha256_file
from virnucpro.domain.fasta import read_fasta
from virnucpro.domain.fasta_reread import reread_fasta
from virnucpro.domain.records import SequenceRecord
from virnucpro.errors import InputError

GOOD = (
    ">seq1 first record\nACGTACGTAC\nGTACG\n"
    ">seq2\nacgtnNRYK\n"
    ">seq3   spaced \t description  \nACGU\nRYKMSWBDHVACGTACGTAC\nacgtacgtacgtnurykmswbdhv\n"
    ">seq4 a > inside the header\nAC\n"
)
CASES = {
    "multi-line": GOOD,
    "lowercase": ">low lower case kept\nacgtacgtac\nggcc\n>MiXeD\nAcGtNn\n",
    "IUPAC": ">iupac\nACGTUNRYKMSWBDHVACGTACGTACGT\nacgtunrykmswbdhvacgtacgtacgt\n",
    "empty descriptions": ">a\nACGT\n>b \nACGT\n>c\t\nACGT\n>  d\nACGT\n",
    "CRLF": GOOD.replace("\n", "\r\n"),
    "CR": GOOD.replace("\n", "\r"),
    "mixed endings": GOOD.replace("\n", "\r", 3).replace("\n", "\r\n", 2),
    "blank lines, spaces and tabs": "\n\n  \n>s1 d\n AC GT\t\n\n  \nAC \t \n\n>s2\n\tGG\n",
    "no final newline": ">s1\nACGT\n>s2\nGGCC",
    "byte-order mark": "\ufeff>s1 d\nACGT\n>s2\nAC\n",
    "non-ASCII header": ">séq_1 Écoli phage λ, ünïcode\nACGT\n>s2 \u00a0nbsp\u00a0\nAC\n",
    "one long line": ">long\n" + "ACGT" * 5000 + "\n>short\nA\n",
}


def _write(tmp_path: Path, text: str, compress: bool = False) -> Path:
    data = text.encode("utf-8")
    path = tmp_path / ("input.fa.gz" if compress else "input.fa")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _fast(
    path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int = fasta_reread.BLOCK_BYTES
) -> list[SequenceRecord]:
    """reread_fasta on an unchanged file, with the general reader out of reach."""
    sha = sha256_file(path)
    with monkeypatch.context() as patch:
        patch.setattr(fasta_reread, "read_fasta", _not_called)
        return list(reread_fasta(path, sha, block_bytes=block_bytes))


def _not_called(path: object) -> None:
    raise AssertionError("the general reader was used for an unchanged file")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", list(CASES))
def test_block_reader_yields_what_read_fasta_yields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, compress: bool
) -> None:
    path = _write(tmp_path, CASES[name], compress)
    expected = list(read_fasta(path))
    assert len(expected) >= 1
    assert _fast(path, monkeypatch) == expected


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 4, 5, 7, 64])
@pytest.mark.parametrize(
    "name", ["multi-line", "CRLF", "CR", "mixed endings", "byte-order mark", "non-ASCII header"]
)
def test_records_and_line_endings_cut_between_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, block_bytes: int
) -> None:
    """A '>' after a line end of the previous read, a CRLF or a UTF-8 letter cut in two."""
    path = _write(tmp_path, CASES[name])
    assert _fast(path, monkeypatch, block_bytes) == list(read_fasta(path))


def test_multi_member_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "members.fa.gz"
    path.write_bytes(gzip.compress(b">a x\nAC\nGT\n") + gzip.compress(b">b\nGG\n"))
    assert _fast(path, monkeypatch) == [SequenceRecord("a", "x", "ACGT"), SequenceRecord("b", "", "GG")]


def test_the_records_of_the_documented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, CASES["CRLF"])
    assert _fast(path, monkeypatch)[:2] == [
        SequenceRecord("seq1", "first record", "ACGTACGTACGTACG"),
        SequenceRecord("seq2", "", "acgtnNRYK"),
    ]


def test_a_changed_file_is_read_by_the_general_reader_with_its_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, ">s1\nACGT\n>s2\nAC-GT\n")
    with pytest.raises(InputError, match=r"line 4, record 's2': '-' at column 3 is not a nucleotide"):
        list(reread_fasta(path, "0" * 64))


def test_a_changed_file_gives_the_general_readers_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, GOOD)
    calls: list[object] = []
    monkeypatch.setattr(fasta_reread, "read_fasta", lambda p: calls.append(p) or read_fasta(p))
    assert list(reread_fasta(path, "0" * 64)) == list(read_fasta(path))
    assert calls == [path]
