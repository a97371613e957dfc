"""Streaming FASTA reading with clear input errors, and atomic FASTA writing.

Reading (:func:`read_fasta`) follows Biopython's ``SeqIO.parse(..., "fasta")``, which the
original VirNucPro uses: the record ID is the first whitespace-separated token of the header, the
rest is the description; sequence lines are joined with trailing whitespace and internal spaces
removed (tabs are removed too). Beyond Biopython, every record is checked, and anything the pipeline
cannot use raises :class:`~virnucpro.errors.InputError` with a message that names the file, the
record or line, and the fix: an empty file, a file that is not FASTA (FASTQ, GenBank, binary data,
other compressions), a protein FASTA, an empty ID, a record without sequence, a character that is
not a nucleotide code, a control character in a header, a duplicated ID (counted over the whole
file) and a truncated or corrupt gzip file.

Choices:

- The file is streamed: one record is in memory at a time, so multi-GB inputs work; a single-line
  50-Mbp sequence is read in linear time. To find duplicate IDs, only the 64-bit hash of each ID is
  kept (about 60 bytes per record); a repeated hash is confirmed by re-reading the headers, which
  also gives every line of the duplicate (inputs that cannot be re-read, such as pipes, keep the
  IDs themselves instead).
- gzip is detected by its magic bytes, not by the file name. CRLF and old Mac (CR-only) line
  endings and a UTF-8 byte-order mark are accepted and give the same records as plain LF files
  (lines are split as Python's universal newlines, which Biopython reads with, split them).
- A header is UTF-8 text without control characters (C0 except the tab, DEL, C1): a NUL byte or
  an escape sequence in a header would otherwise become part of an ID in every output table, so
  it is an error naming the line and column. IDs and descriptions are kept as given, non-ASCII
  letters included.
- Case is preserved (the chunk file keeps it; translation upper-cases each chunk).
- Allowed sequence letters are the IUPAC nucleotide codes ``ACGTUNRYKMSWBDHV`` in either case.
- ``U`` (RNA input) is kept as given, not converted to ``T``: the original translates only ``ACGT``
  codons and drops the others, so an RNA record gives fewer (or no) frames, exactly as in the
  original. A warning is logged once per file when a ``U`` is seen; convert RNA to DNA to avoid it.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.records import SequenceRecord
from virnucpro.errors import InputError

__all__ = [
    "NUCLEOTIDE_CODES",
    "FastaSummary",
    "check_input_file",
    "open_fasta",
    "read_fasta",
    "split_title",
    "validate_fasta",
    "format_fasta_record",
    "write_fasta",
]

logger = logging.getLogger(__name__)

NUCLEOTIDE_CODES = "ACGTUNRYKMSWBDHV"
"""Every letter a sequence may contain (either case)."""

_ACGTN = b"ACGTNacgtn"
_ACGTUN = b"ACGTUNacgtun"
_U_AND_OTHER_IUPAC = b"URYKMSWBDHVurykmswbdhv"
_VALID = frozenset(_ACGTN + _U_AND_OTHER_IUPAC)
_LETTERS = bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(ord("a"), ord("z") + 1))
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSIONS = (
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
)
# A record is called protein when fewer than this fraction of its letters are A/C/G/T/U/N, and it
# has at least _PROTEIN_MIN_LENGTH letters (all IUPAC codes) or, once a letter that is no nucleotide
# code is met (E, F, I, L, P, Q ...), at least _PROTEIN_MIN_LETTERS_WITH_AMINO_ACID letters.
_PROTEIN_MAX_NUCLEOTIDE_FRACTION = 0.5
_PROTEIN_MIN_LENGTH = 10
_PROTEIN_MIN_LETTERS_WITH_AMINO_ACID = 4
_MAX_DUPLICATE_LINES_SHOWN = 5
_SNIFF_BYTES = 4096
_READ_BLOCK = 1 << 20
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""Characters a header may not hold: C0 controls except the tab, DEL and the C1 controls."""


@dataclass(frozen=True, slots=True)
class FastaSummary:
    """What :func:`validate_fasta` found in a valid file."""

    n_records: int
    total_length: int
    max_length: int


def read_fasta(path: str | os.PathLike[str]) -> Iterator[SequenceRecord]:
    """Yield the records of a FASTA file (plain or gzip), one at a time, checking each.

    Raises :class:`InputError` (when the offending part of the stream is reached) for every problem
    listed in the module docstring. Records before the problem have already been yielded; use
    :func:`validate_fasta` first to fail before doing any work.
    """
    return _FastaParser(Path(path)).records()


def open_fasta(path: str | os.PathLike[str]) -> BinaryIO:
    """The bytes of a FASTA file, decompressed when it is gzip (told by its magic bytes, not its
    name); :class:`InputError` naming the problem when it cannot be opened or is another
    compression. The caller closes it."""
    return _FastaParser(Path(path))._open()


def split_title(title: str) -> tuple[str, str]:
    """A header's text after '>' (line ending removed) as ``(ID, description)``: the first
    whitespace-separated token and the rest, stripped, as Biopython splits it. The ID is empty
    when the title is blank."""
    fields = title.split(None, 1)
    if not fields:
        return "", ""
    return fields[0], (fields[1].strip() if len(fields) > 1 else "")


def check_input_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless ``path`` is a regular file that can be opened and read.

    Names the problem: not found, a directory, a pipe or device (the pipeline reads its input more
    than once), permission denied, another compression.
    """
    path = Path(path)
    if path.exists() and not path.is_dir() and not path.is_file():
        raise InputError(
            f"{path}: is not a regular file (a pipe, socket or device); the input is read more "
            "than once. Save it to a file first and re-run."
        )
    open_fasta(path).close()


def validate_fasta(path: str | os.PathLike[str]) -> FastaSummary:
    """Read the whole file once, raising :class:`InputError` on the first problem; return counts."""
    n_records = total = longest = 0
    for record in read_fasta(path):
        n_records += 1
        total += len(record.sequence)
        longest = max(longest, len(record.sequence))
    return FastaSummary(n_records=n_records, total_length=total, max_length=longest)


def format_fasta_record(header: str, sequence: str, wrap: int | None = 60) -> str:
    """One record as FASTA text: ``>header`` then the sequence in lines of ``wrap`` letters.

    ``wrap=None`` writes the sequence on one line. An empty sequence writes the header line only
    (as Biopython does).
    """
    if wrap is not None and wrap < 1:
        raise ValueError(f"wrap must be a positive line width or None, not {wrap}")
    if not sequence:
        return f">{header}\n"
    if wrap is None or len(sequence) <= wrap:
        return f">{header}\n{sequence}\n"
    lines = [sequence[i : i + wrap] for i in range(0, len(sequence), wrap)]
    return f">{header}\n" + "\n".join(lines) + "\n"


def write_fasta(
    path: str | os.PathLike[str],
    records: Iterable[tuple[str, str]],
    wrap: int | None = 60,
) -> int:
    """Write ``(header, sequence)`` pairs to ``path`` atomically; return the number written.

    ``wrap=60`` gives the bytes of Biopython's ``SeqIO.write(..., "fasta")`` for records without a
    description; ``wrap=None`` one line per sequence.
    """
    count = 0
    with atomic_open(path, "w") as handle:
        for header, sequence in records:
            handle.write(format_fasta_record(header, sequence, wrap))
            count += 1
    return count


def _describe_byte(value: int) -> str:
    char = chr(value)
    if value == 0x09:
        return "a tab"
    if 0x20 < value < 0x7F:
        return f"'{char}'"
    return f"the byte 0x{value:02x}"


def _hint_for_byte(value: int) -> str:
    char = chr(value)
    if char in "-.":
        return "Alignment gaps are not allowed: remove '-' and '.' (e.g. `seqkit seq -g`)."
    if char == "*":
        return (
            "'*' is a stop symbol of protein or masked FASTA; VirNucPro needs nucleotide sequences."
        )
    if char.isdigit():
        return (
            "Digits in sequence lines usually mean a GenBank/EMBL-style numbered format; "
            "convert the file to plain FASTA."
        )
    if char == ">":
        return "A header line must start with '>' in the first column."
    if char.isalpha() and value < 0x80:
        return "Replace unknown bases with 'N'."
    return "Remove or replace the character."


class _FastaParser:
    """The state of one pass over one file. Use :meth:`records` once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.is_gzip = False
        self.warned_rna = False

    # ----------------------------------------------------------------------------------- opening
    def _open(self) -> BinaryIO:
        try:
            raw = open(self.path, "rb", buffering=1 << 20)  # noqa: SIM115 (closed by records())
        except FileNotFoundError:
            raise InputError(f"{self.name}: file not found. Check the path and re-run.") from None
        except IsADirectoryError:
            raise InputError(
                f"{self.name}: is a directory, not a FASTA file. Pass the FASTA file itself."
            ) from None
        except PermissionError:
            raise InputError(
                f"{self.name}: permission denied. Make the file readable and re-run."
            ) from None
        except OSError as error:
            raise InputError(f"{self.name}: cannot be opened ({error}).") from None
        try:
            magic = raw.peek(8)[:8]
        except OSError as error:
            raw.close()
            raise InputError(f"{self.name}: cannot be read ({error}).") from None
        if magic.startswith(_GZIP_MAGIC):
            self.is_gzip = True
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        for signature, kind in _OTHER_COMPRESSIONS:
            if magic.startswith(signature):
                raw.close()
                raise InputError(
                    f"{self.name}: is {kind}-compressed; VirNucPro reads plain or gzip FASTA. "
                    f"Decompress it (or re-compress it with gzip) and re-run."
                )
        return raw  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------- parsing
    def records(self) -> Iterator[SequenceRecord]:
        handle = self._open()
        try:
            self._check_not_binary(handle)
            yield from self._parse(handle)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise self._corrupt(error) from error
        except OSError as error:
            if self.is_gzip:
                raise self._corrupt(error) from error
            raise InputError(f"{self.name}: reading failed ({error}).") from error
        finally:
            handle.close()

    def _check_not_binary(self, handle: BinaryIO) -> None:
        sample = handle.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]  # type: ignore[attr-defined]
        if sample.removeprefix(_BOM)[:1] == b">":
            return  # FASTA-like: a NUL byte is reported with its line where the parser meets it
        if b"\x00" in sample:
            raise InputError(
                f"{self.name}: is not a FASTA file: it holds binary data. "
                "Give a plain or gzip-compressed nucleotide FASTA file."
            )

    def _corrupt(self, error: BaseException) -> InputError:
        return InputError(
            f"{self.name}: the gzip file is truncated or corrupt "
            f"({error or type(error).__name__}). Re-download it or re-compress it from the "
            "original, and re-run."
        )

    def _parse(self, handle: BinaryIO) -> Iterator[SequenceRecord]:
        exact_ids = not self.path.is_file()  # a pipe cannot be re-read to confirm a duplicate
        seen: set[object] = set()
        record_id: str | None = None
        description = ""
        header_line = 0
        parts: list[bytes] = []
        length = 0
        non_acgtun = 0
        line_no = 0
        for line_no, line in enumerate(_iter_lines(handle), 1):
            if line_no == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            if line[:1] == b">":
                if record_id is not None:
                    yield self._finish(
                        record_id,
                        description,
                        header_line,
                        parts,
                        length,
                        non_acgtun,
                        next_header=line_no,
                    )
                record_id, description = self._parse_header(line, line_no)
                key = record_id if exact_ids else hash(record_id)
                if key in seen:
                    self._check_duplicate(record_id, line_no, exact_ids)
                seen.add(key)
                header_line = line_no
                parts = []
                length = non_acgtun = 0
                continue
            body = line.rstrip()
            if not body:
                continue
            if record_id is None:
                self._raise_not_fasta(line, line_no)
            if b" " in body or b"\t" in body:
                body = body.replace(b" ", b"").replace(b"\t", b"")
            rest = body.translate(None, _ACGTN)
            if rest:
                if rest.translate(None, _U_AND_OTHER_IUPAC):
                    self._raise_bad_character(
                        record_id, header_line, line, line_no, body, length, non_acgtun
                    )
                n_u = rest.count(b"U") + rest.count(b"u")
                if n_u and not self.warned_rna:
                    self._warn_rna(record_id)
                non_acgtun += len(rest) - n_u
            parts.append(body)
            length += len(body)
        if record_id is None:
            raise InputError(
                f"{self.name}: the file is empty{' after decompression' if self.is_gzip else ''} "
                "(no FASTA record found). Check that the right file was given and that it was "
                "written completely."
            )
        yield self._finish(
            record_id, description, header_line, parts, length, non_acgtun, next_header=None
        )

    def _parse_header(self, line: bytes, line_no: int) -> tuple[str, str]:
        try:
            title = line[1:].decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(
                f"{self.name}: line {line_no}: the header is not valid UTF-8 text "
                f"(byte 0x{line[1 + error.start]:02x}). Save the file as UTF-8 or ASCII and re-run."
            ) from None
        title = title.rstrip("\r\n")
        control = _CONTROL.search(title)
        if control is not None:
            raise InputError(
                f"{self.name}: line {line_no}: the header holds {_describe_control(control.group())} "
                f"at column {control.start() + 2}; a header must be printable text (it becomes the "
                "record ID in every output). Remove the character from the header and re-run."
            )
        record_id, description = split_title(title)
        if not record_id:
            raise InputError(
                f"{self.name}: line {line_no}: the header '>' has an empty ID. Give every record "
                "an ID right after '>' (e.g. '>contig_1') and re-run."
            )
        return record_id, description

    def _finish(
        self,
        record_id: str,
        description: str,
        header_line: int,
        parts: list[bytes],
        length: int,
        non_acgtun: int,
        next_header: int | None,
    ) -> SequenceRecord:
        if length == 0:
            followed = (
                f"another header (line {next_header})" if next_header else "the end of the file"
            )
            raise InputError(
                f"{self.name}: record '{record_id}' (line {header_line}) has no sequence: its "
                f"header is followed directly by {followed}. Remove the empty record or add its "
                "sequence, and re-run."
            )
        if length >= _PROTEIN_MIN_LENGTH and (length - non_acgtun) < (
            _PROTEIN_MAX_NUCLEOTIDE_FRACTION * length
        ):
            raise self._protein_error(record_id, header_line, length - non_acgtun, length)
        sequence = (parts[0] if len(parts) == 1 else b"".join(parts)).decode("ascii")
        return SequenceRecord(id=record_id, description=description, sequence=sequence)

    # ------------------------------------------------------------------------------------ errors
    def _raise_not_fasta(self, line: bytes, line_no: int) -> None:
        text = line.strip()
        if b"\x00" in text[:4096] or not _is_text(text[:4096]):
            raise InputError(
                f"{self.name}: is not a FASTA file: it holds binary data (line {line_no}). "
                "Give a plain or gzip-compressed nucleotide FASTA file."
            )
        shown = text[:40].decode("utf-8", "replace") + ("..." if len(text) > 40 else "")
        if text.startswith(b"@"):
            kind = (
                "it looks like FASTQ (records starting with '@'). Convert it to FASTA first "
                "(e.g. `seqtk seq -A in.fq > in.fa`)"
            )
        elif text.startswith(b"LOCUS"):
            kind = "it looks like a GenBank flat file. Convert it to FASTA first"
        else:
            kind = "a FASTA file must start with a header line beginning with '>'"
        raise InputError(
            f"{self.name}: is not FASTA: the first non-blank line (line {line_no}) is "
            f"'{shown}'; {kind}, and re-run."
        )

    def _raise_bad_character(
        self,
        record_id: str,
        header_line: int,
        line: bytes,
        line_no: int,
        body: bytes,
        length_before: int,
        non_acgtun_before: int,
    ) -> None:
        nucleotides_here = len(body) - len(body.translate(None, _ACGTUN))
        nucleotides = length_before - non_acgtun_before + nucleotides_here
        letters = length_before + len(body) - len(body.translate(None, _LETTERS))
        if (
            letters >= _PROTEIN_MIN_LETTERS_WITH_AMINO_ACID
            and nucleotides < _PROTEIN_MAX_NUCLEOTIDE_FRACTION * letters
        ):
            raise self._protein_error(record_id, header_line, nucleotides, letters)
        stripped = line.rstrip()
        column, value = next(
            (i + 1, b) for i, b in enumerate(stripped) if b not in _VALID and b not in b" \t"
        )
        raise InputError(
            f"{self.name}: line {line_no}, record '{record_id}': {_describe_byte(value)} at column "
            f"{column} is not a nucleotide code (allowed: {NUCLEOTIDE_CODES}, any case). "
            f"{_hint_for_byte(value)}"
        )

    def _protein_error(
        self, record_id: str, header_line: int, nucleotides: int, letters: int
    ) -> InputError:
        percent = round(100 * nucleotides / letters)
        return InputError(
            f"{self.name}: record '{record_id}' (line {header_line}) looks like protein; "
            f"VirNucPro needs nucleotide sequences (only {percent}% of its letters are "
            "A/C/G/T/U/N). Give the nucleotide FASTA (contigs or reads), not translated proteins."
        )

    def _check_duplicate(self, record_id: str, line_no: int, exact_ids: bool) -> None:
        """Raise for a duplicated ID, counted over the whole file; return on a hash collision."""
        if exact_ids:
            raise InputError(
                f"{self.name}: ID '{record_id}' appears more than once (again at line {line_no}); "
                "IDs must be unique. Rename the duplicates and re-run."
            )
        where = self._header_lines_of(record_id)
        if len(where) < 2:
            return  # two different IDs with the same hash
        raise InputError(
            f"{self.name}: ID '{record_id}' appears {len(where)} times (lines "
            f"{_list_lines(where)}); IDs must be unique. Rename the duplicates and re-run."
        )

    def _header_lines_of(self, record_id: str) -> list[int]:
        """The line numbers of every header of the file whose ID is ``record_id``."""
        found: list[int] = []
        handle = self._open()
        try:
            for line_no, line in enumerate(_iter_lines(handle), 1):
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if line[:1] == b">":
                    fields = line[1:].decode("utf-8", "replace").split(None, 1)
                    if fields and fields[0] == record_id:
                        found.append(line_no)
        finally:
            handle.close()
        return found

    def _warn_rna(self, record_id: str) -> None:
        self.warned_rna = True
        logger.warning(
            "%s: record '%s' contains 'U' (RNA). It is kept as given: only codons of A/C/G/T are "
            "translated, so codons with U are dropped. Convert U to T to analyse RNA input.",
            self.name,
            record_id,
        )


def _iter_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The lines of ``handle``, each with its ending: LF, CRLF or a lone CR (old Mac files).

    Read in blocks, so one line of any length costs linear time.
    """
    pending: list[bytes] = []  # the start of a line not ended yet
    while True:
        block = handle.read(_READ_BLOCK)
        if not block:
            break
        if pending and pending[-1].endswith(b"\r"):  # a CR line, or the first half of a CRLF
            if block.startswith(b"\n"):
                pending.append(b"\n")
                block = block[1:]
            yield b"".join(pending)
            pending = []
        lines = block.splitlines(keepends=True)
        if not lines:
            continue
        last = lines.pop()
        if lines and pending:
            lines[0] = b"".join(pending) + lines[0]
            pending = []
        yield from lines
        pending.append(last)
        if last.endswith(b"\n"):
            yield b"".join(pending)
            pending = []
    if pending:
        yield b"".join(pending)


def _describe_control(char: str) -> str:
    if char == "\x00":
        return "a NUL byte (0x00)"
    if char in "\x0b\x0c":
        return "a vertical tab or form feed"
    return f"the control character U+{ord(char):04X}"


def _list_lines(numbers: list[int]) -> str:
    """``1 and 5``, ``1, 5 and 9``, or the first few then ``...``."""
    shown = [str(n) for n in numbers[:_MAX_DUPLICATE_LINES_SHOWN]]
    if len(numbers) > _MAX_DUPLICATE_LINES_SHOWN:
        return ", ".join(shown) + ", ..."
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sample is still text.
        return error.start >= len(data) - 3 and error.reason == "unexpected end of data"
    return True
