"""Reading the input FASTA a second time, fast, when it is still the file the run prepared.

The report stage reads the input again for ``virus.fna`` and ``provirus.fna``. The general reader
(:func:`~virnucpro.domain.fasta.read_fasta`) checks every line, one line at a time. A file whose
SHA-256 is still the one recorded when the run prepared it passed every one of those checks then,
so :func:`reread_fasta` reads it with a block reader instead: reads of :data:`BLOCK_BYTES`, a
record starts at each '>' that starts a line, and the sequence is the record's lines after its
header with every ASCII whitespace byte removed. On such a file this gives what ``read_fasta``
gives, record for record (same IDs, descriptions and sequences, case kept), under the line rules
of :mod:`virnucpro.domain.fasta`: LF, CRLF or a lone CR ends a line (Python's universal
newlines), a UTF-8 byte-order mark at the start of the file is dropped, blank lines and the
spaces and tabs of sequence lines are ignored, gzip is told by its magic bytes.

Only files that the general reader accepts are read this way: in one that it refuses, whitespace
other than spaces and tabs inside a sequence line (a vertical tab, a form feed) is an error there
and removed here. A file whose checksum differs is read by ``read_fasta``, with its checks and
errors. One record is in memory at a time, as with ``read_fasta``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from virnucpro.domain.checksums import sha256_file
from virnucpro.domain.fasta import open_fasta, read_fasta, split_title
from virnucpro.domain.records import SequenceRecord

__all__ = ["BLOCK_BYTES", "reread_fasta"]

BLOCK_BYTES = 1 << 22
"""Bytes per read of the block reader (4 MiB)."""

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.rstrip() strips, as the general reader does per line
_LINE_ENDS = b"\r\n"


def reread_fasta(
    path: str | os.PathLike[str], input_sha256: str, *, block_bytes: int = BLOCK_BYTES
) -> Iterator[SequenceRecord]:
    """The records of the FASTA file at ``path``, which the run read before when its SHA-256 was
    ``input_sha256``: by the block reader if it still has that checksum, else by
    :func:`~virnucpro.domain.fasta.read_fasta` (module docstring)."""
    if sha256_file(path) != input_sha256:
        return read_fasta(path)
    return _block_records(path, block_bytes)


def _block_records(path: str | os.PathLike[str], block_bytes: int) -> Iterator[SequenceRecord]:
    handle = open_fasta(path)
    try:
        for text in _record_texts(handle, block_bytes):
            yield _record(text)
    finally:
        handle.close()


def _record_texts(handle: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """The bytes of each record, from its '>' to the next record's '>' (the blank text before the
    first record is dropped)."""
    parts: list[bytes] = []  # the record begun and not ended yet
    in_record = False
    before = b"\n"  # the byte before this block; the start of the file is a line start
    block = handle.read(max(block_bytes, len(_BOM)))
    if block.startswith(_BOM):
        block = block[len(_BOM) :] or handle.read(block_bytes)
    while block:
        end = 0
        for start in _record_starts(block, line_start=before in _LINE_ENDS):
            if in_record:
                parts.append(block[end:start])
                yield b"".join(parts)
            parts, in_record, end = [], True, start
        if in_record:
            parts.append(block[end:] if end else block)
        before = block[-1:]
        block = handle.read(block_bytes)
    if in_record:
        yield b"".join(parts)


def _record_starts(block: bytes, *, line_start: bool) -> list[int]:
    """The offsets in ``block`` of each '>' that starts a line (``line_start``: the block begins
    one), in order."""
    starts = [0] if line_start and block[:1] == b">" else []
    for marker in (b"\n>", b"\r>") if b"\r" in block else (b"\n>",):
        found = block.find(marker)
        while found >= 0:
            starts.append(found + 1)
            found = block.find(marker, found + 2)
    return sorted(starts)


def _record(text: bytes) -> SequenceRecord:
    header_end = _first_line_end(text)
    record_id, description = split_title(text[1:header_end].decode("utf-8"))
    sequence = text[header_end:].replace(b"\n", b"")
    if not sequence.isalpha():  # whitespace other than LF: CR line ends, spaces, tabs
        sequence = sequence.translate(None, _WHITESPACE)
    return SequenceRecord(id=record_id, description=description, sequence=sequence.decode("ascii"))


def _first_line_end(text: bytes) -> int:
    """The offset of the first CR or LF in ``text`` (its length when there is none)."""
    lf = text.find(b"\n")
    first = len(text) if lf < 0 else lf
    cr = text.find(b"\r", 0, first)
    return first if cr < 0 else cr
