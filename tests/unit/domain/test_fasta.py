"""FASTA reading and writing: good inputs, and the message a user reads for every bad one."""

from __future__ import annotations

import bz2
import gzip
import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest

from virnucpro.domain.fasta import (
    FastaSummary,
    check_input_file,
    format_fasta_record,
    read_fasta,
    validate_fasta,
    write_fasta,
)
from virnucpro.domain.records import SequenceRecord
from virnucpro.errors import InputError


def _write(tmp_path: Path, content: str | bytes, name: str = "sample.fa") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _read(path: Path) -> list[SequenceRecord]:
    return list(read_fasta(path))


GOOD = ">seq1 first record\nACGTACGTAC\nGTACG\n>seq2\nacgtnNRYK\n"


# ------------------------------------------------------------------------------------ good input
def test_multi_record_multi_line(tmp_path: Path) -> None:
    records = _read(_write(tmp_path, GOOD))
    assert records == [
        SequenceRecord("seq1", "first record", "ACGTACGTACGTACG"),
        SequenceRecord("seq2", "", "acgtnNRYK"),
    ]


def test_id_is_first_token_and_description_the_rest(tmp_path: Path) -> None:
    path = _write(tmp_path, ">HS11286_frag_9 CP003225.1:74269-77648(+)  len=3380 \nACGT\n")
    (record,) = _read(path)
    assert record.id == "HS11286_frag_9"
    assert record.description == "CP003225.1:74269-77648(+)  len=3380"


def test_space_after_gt_is_skipped_like_biopython(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, ">  contig_1 desc\nACGT\n"))
    assert record.id == "contig_1"


def test_lowercase_is_kept(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, ">a\nacgtACGTnn\n"))
    assert record.sequence == "acgtACGTnn"


def test_every_iupac_code_in_both_cases_is_accepted(tmp_path: Path) -> None:
    codes = "ACGTUNRYKMSWBDHV"
    (record,) = _read(_write(tmp_path, f">a\nACGTACGTACGTACGTACGT{codes}{codes.lower()}\n"))
    assert record.sequence.endswith(codes + codes.lower())


def test_crlf_gives_the_same_records_as_lf(tmp_path: Path) -> None:
    lf = _read(_write(tmp_path, GOOD, "lf.fa"))
    crlf = _read(_write(tmp_path, GOOD.replace("\n", "\r\n"), "crlf.fa"))
    assert crlf == lf


def test_cr_only_line_endings_give_the_same_records_as_lf(tmp_path: Path) -> None:
    """Old Mac files: Biopython reads them with universal newlines, so must we."""
    lf = _read(_write(tmp_path, GOOD, "lf.fa"))
    assert _read(_write(tmp_path, GOOD.replace("\n", "\r"), "cr.fa")) == lf
    mixed = GOOD.replace("\n", "\r", 2).replace("\n", "\r\n", 1)
    assert _read(_write(tmp_path, mixed, "mixed.fa")) == lf


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64])
def test_line_endings_split_across_read_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """A CRLF cut between two reads is one line ending, not a CR line and an empty LF line."""
    expected = _read(_write(tmp_path, GOOD, "lf.fa"))
    monkeypatch.setattr("virnucpro.domain.fasta._READ_BLOCK", block)
    for name, text in (("crlf.fa", GOOD.replace("\n", "\r\n")), ("cr.fa", GOOD.replace("\n", "\r"))):
        assert _read(_write(tmp_path, text, name)) == expected
    bad = _write(tmp_path, GOOD.replace("\n", "\r\n") + ">c\r\nAC!\r\n", "bad.fa")
    with pytest.raises(InputError, match=r"line 7, record 'c'"):  # line numbers stay right
        _read(bad)


def test_non_ascii_ids_and_descriptions_are_kept(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, ">contig_é Küste 東京\nACGT\n"))
    assert (record.id, record.description) == ("contig_é", "Küste 東京")


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x00", r"a NUL byte \(0x00\)"),
        ("\x1b", "the control character U\\+001B"),
        ("\x0c", "a vertical tab or form feed"),
        ("\x7f", "the control character U\\+007F"),
        ("\u0085", "the control character U\\+0085"),
    ],
)
def test_control_character_in_a_header_names_the_line(tmp_path: Path, char: str, shown: str) -> None:
    path = _write(tmp_path, f">a\nACGT\n>contig{char}_2 x\nACGT\n")
    with pytest.raises(InputError, match=rf"sample\.fa: line 3: the header holds {shown} at column 8"):
        _read(path)


def test_nul_in_a_header_past_the_binary_sniff_is_an_error(tmp_path: Path) -> None:
    """The first 4 kB are checked for binary data; a NUL later, in a header, must not become an ID."""
    path = _write(tmp_path, ">a\n" + "ACGT" * 2000 + "\n>b\x00c\nACGT\n")
    with pytest.raises(InputError, match="line 3: the header holds a NUL byte"):
        _read(path)


def test_a_tab_in_a_header_separates_id_and_description(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, ">a\tdesc\tmore\nACGT\n"))
    assert (record.id, record.description) == ("a", "desc\tmore")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())
    assert _read(path) == _read(_write(tmp_path, GOOD, "plain.fa"))


def test_blank_lines_spaces_and_tabs_are_ignored(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, "\n\n>a\nAC GT\n\n\tAAA  \n\n"))
    assert record.sequence == "ACGTAAA"


def test_missing_final_newline(tmp_path: Path) -> None:
    (record,) = _read(_write(tmp_path, ">a\nACGT"))
    assert record.sequence == "ACGT"


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path: Path) -> None:
    plain = _read(_write(tmp_path, GOOD))
    assert _read(_write(tmp_path, gzip.compress(GOOD.encode()), "no_suffix.fa")) == plain
    assert _read(_write(tmp_path, gzip.compress(GOOD.encode()), "sample.fa.gz")) == plain
    assert _read(_write(tmp_path, GOOD, "plain_named.fa.gz")) == plain


def test_multi_member_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b">a\nACGT\n") + gzip.compress(b">b\nGGCC\n")
    assert [r.id for r in _read(_write(tmp_path, data))] == ["a", "b"]


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = _write(tmp_path, ">a\nACGT\n>b\nAC!GT\n")
    records = read_fasta(path)
    assert next(records).id == "a"
    with pytest.raises(InputError):
        next(records)


def test_huge_single_line_streams_in_linear_time(tmp_path: Path) -> None:
    length = 50_000_000
    path = tmp_path / "huge.fa"
    with open(path, "wb") as handle:
        handle.write(b">chr huge\n")
        block = b"ACGTTGCA" * 125_000  # 1 Mbp
        for _ in range(length // len(block)):
            handle.write(block)
        handle.write(b"\n>small\nACGT\n")
    start = time.perf_counter()
    records = _read(path)
    elapsed = time.perf_counter() - start
    assert [len(r.sequence) for r in records] == [length, 4]
    assert records[0].sequence[:8] == "ACGTTGCA"
    assert elapsed < 30, f"reading 50 Mbp took {elapsed:.1f}s"


def test_rna_is_kept_as_given_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="virnucpro.domain.fasta"):
        (record,) = _read(_write(tmp_path, ">r\nACGUACGU\n"))
    assert record.sequence == "ACGUACGU"
    assert "contains 'U' (RNA)" in caplog.text


def test_validate_fasta_counts(tmp_path: Path) -> None:
    assert validate_fasta(_write(tmp_path, GOOD)) == FastaSummary(2, 24, 15)


# ------------------------------------------------------------------------------------- bad input
def test_zero_byte_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sample\.fa: the file is empty"):
        _read(_write(tmp_path, b""))


def test_whitespace_only_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sample\.fa: the file is empty"):
        _read(_write(tmp_path, "\n  \n\t\n\r\n"))


def test_gzip_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty after decompression"):
        _read(_write(tmp_path, gzip.compress(b"")))


def test_fastq_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is not FASTA: .*line 1.*looks like FASTQ.*seqtk"):
        _read(_write(tmp_path, "@read1\nACGT\n+\nIIII\n"))


def test_genbank_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="looks like a GenBank flat file"):
        _read(_write(tmp_path, "LOCUS       NC_001416  48502 bp    DNA\n"))


def test_other_text_before_first_header(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"first non-blank line \(line 2\) is 'ACGT'.*'>'"):
        _read(_write(tmp_path, "\nACGT\n>a\nACGT\n"))


def test_binary_junk(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a FASTA file: it holds binary data"):
        _read(_write(tmp_path, bytes(range(256)) * 4))


def test_binary_junk_without_nul(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="binary data"):
        _read(_write(tmp_path, b"\xff\xfe\x80\x81\x99 junk\n"))


def test_other_compression_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is bzip2-compressed.*plain or gzip"):
        _read(_write(tmp_path, bz2.compress(GOOD.encode())))


def test_protein_fasta(tmp_path: Path) -> None:
    path = _write(tmp_path, ">prot_1 some protein\nMKVLAAGIVALLLAAQPEFSTRRL\n")
    with pytest.raises(
        InputError,
        match=r"'prot_1' \(line 1\) looks like protein; VirNucPro needs nucleotide sequences",
    ):
        _read(path)


def test_protein_made_only_of_iupac_letters_is_still_protein(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="looks like protein"):
        _read(_write(tmp_path, ">p\nMKVAHGSWRMKVAHGSWRMKV\n"))


def test_protein_detected_on_a_later_line(tmp_path: Path) -> None:
    path = _write(tmp_path, ">dna\nACGTACGT\n>prot\nMKVL\nEEFFIILLPPQQ\n")
    with pytest.raises(InputError, match="'prot' \\(line 3\\) looks like protein"):
        _read(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, ">contig_7\nACGT\n>b\nACGT\n>contig_7 again\nACGT\n")
    message = (
        "sample.fa: ID 'contig_7' appears 2 times (lines 1 and 5); IDs must be unique. "
        "Rename the duplicates and re-run."
    )
    with pytest.raises(InputError, match=re.escape(message)):
        _read(path)


def test_duplicate_id_is_counted_over_the_whole_file(tmp_path: Path) -> None:
    text = ">contig_7\nA\n>x\nC\n>contig_7\nG\n>x\nT\n>contig_7\nAA\n>y\nC\n"
    message = (
        "sample.fa: ID 'contig_7' appears 3 times (lines 1, 5 and 9); IDs must be unique. "
        "Rename the duplicates and re-run."
    )
    with pytest.raises(InputError, match=re.escape(message)):
        _read(_write(tmp_path, text))


def test_many_duplicates_are_listed_briefly(tmp_path: Path) -> None:
    path = _write(tmp_path, ">d\nACGT\n" * 8)
    with pytest.raises(InputError, match=r"appears 8 times \(lines 1, 3, 5, 7, 9, \.\.\.\)"):
        _read(path)


def test_duplicate_in_gzip_input(tmp_path: Path) -> None:
    path = _write(tmp_path, gzip.compress(b"\xef\xbb\xbf>a\nAC\n>b\nGT\n>a x\nTT\n"), "in.fa.gz")
    with pytest.raises(InputError, match=r"ID 'a' appears 2 times \(lines 1 and 5\)"):
        _read(path)


def test_hash_collision_is_not_a_duplicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import virnucpro.domain.fasta as fasta_module

    monkeypatch.setattr(fasta_module, "hash", lambda _id: 42, raising=False)
    records = _read(_write(tmp_path, ">a\nAC\n>b\nGT\n>c\nTT\n"))
    assert [r.id for r in records] == ["a", "b", "c"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_duplicate_in_a_pipe_is_found_without_re_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b">a\nAC\n>a\nGT\n"))
    writer.start()
    try:
        with pytest.raises(InputError, match=r"ID 'a' appears more than once \(again at line 3\)"):
            _read(fifo)
    finally:
        writer.join()


def test_empty_id(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 3: the header '>' has an empty ID"):
        _read(_write(tmp_path, ">a\nACGT\n>\nACGT\n"))


def test_blank_id_after_gt(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty ID"):
        _read(_write(tmp_path, ">   \nACGT\n"))


def test_record_without_sequence_followed_by_header(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"record 'empty' \(line 3\) has no sequence: .*another header \(line 4\)",
    ):
        _read(_write(tmp_path, ">a\nACGT\n>empty\n>b\nACGT\n"))


def test_record_without_sequence_at_end_of_file(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"record 'last' \(line 3\) has no sequence.*end of the file"
    ):
        _read(_write(tmp_path, ">a\nACGT\n>last\n\n"))


@pytest.mark.parametrize(
    ("bad", "shown", "hint"),
    [
        ("7", "'7'", "numbered format"),
        ("*", "'\\*'", "stop symbol"),
        ("-", "'-'", "gaps"),
        (".", "'\\.'", "gaps"),
        ("!", "'!'", "Remove or replace"),
        ("X", "'X'", "Replace unknown bases with 'N'"),
    ],
)
def test_non_sequence_character(tmp_path: Path, bad: str, shown: str, hint: str) -> None:
    path = _write(tmp_path, f">a\nACGT\n>contig_2 x\nACGTACGT\nACG{bad}TTT\n")
    with pytest.raises(
        InputError,
        match=rf"sample\.fa: line 5, record 'contig_2': {shown} at column 4 is not a nucleotide "
        rf"code.*{hint}",
    ):
        _read(path)


def test_non_ascii_in_sequence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 2, record 'a': the byte 0xc3 at column 3"):
        _read(_write(tmp_path, ">a\nACé\n"))


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    path = _write(tmp_path, data[: len(data) // 2], "cut.fa.gz")
    with pytest.raises(
        InputError, match=r"cut\.fa\.gz: the gzip file is truncated or corrupt.*Re-download"
    ):
        _read(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress((">a\n" + "ACGTTGCAAT" * 2000 + "\n").encode()))
    for i in range(30, 60):
        data[i] ^= 0xFF
    with pytest.raises(InputError, match="the gzip file is truncated or corrupt"):
        _read(_write(tmp_path, bytes(data)))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.fa: file not found"):
        _read(tmp_path / "nope.fa")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        _read(tmp_path)


def test_check_input_file_names_the_problem(tmp_path: Path) -> None:
    check_input_file(_write(tmp_path, GOOD))
    with pytest.raises(InputError, match=r"nope\.fa: file not found"):
        check_input_file(tmp_path / "nope.fa")
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path))}: is a directory, not a FASTA file"):
        check_input_file(tmp_path)
    fifo = tmp_path / "pipe.fa"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"pipe\.fa: is not a regular file.*Save it to a file"):
        check_input_file(fifo)


# --------------------------------------------------------------------------------------- writing
def test_format_wraps_like_biopython() -> None:
    assert (
        format_fasta_record("x", "A" * 130, 60)
        == ">x\n" + "A" * 60 + "\n" + "A" * 60 + "\nAAAAAAAAAA\n"
    )
    assert format_fasta_record("x", "A" * 60, 60) == ">x\n" + "A" * 60 + "\n"
    assert format_fasta_record("x", "A" * 130, None) == ">x\n" + "A" * 130 + "\n"
    assert format_fasta_record("x", "", 60) == ">x\n"


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.fa"
    records = [("a", "ACGT" * 40), ("b", "acgtn")]
    assert write_fasta(path, records, wrap=60) == 2
    assert [(r.id, r.sequence) for r in read_fasta(path)] == records
    assert list(tmp_path.iterdir()) == [path]


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.fa"

    def records():
        yield ("a", "ACGT")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_fasta(path, records(), wrap=None)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ real files
def test_real_gzip_genome(shared_dir: Path) -> None:
    (record,) = _read(shared_dir / "data" / "real" / "lambda_virus.fa.gz")
    assert (record.id, len(record.sequence)) == ("gi|9626243|ref|NC_001416.1|", 48502)
    assert record.description.startswith("Enterobacteria phage lambda")


def test_real_xz_file_is_refused_with_the_fix(shared_dir: Path) -> None:
    with pytest.raises(InputError, match=r"Klebs_HS11286\.fna\.xz: is xz-compressed.*Decompress"):
        _read(shared_dir / "data" / "real" / "Klebs_HS11286.fna.xz")
