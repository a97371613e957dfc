"""Streamed SHA-256 checksums of files (model files, inputs recorded in ``run_info.json``, the
prepared work files recorded in ``prepared.json``).

:func:`sha256_file` always reads the file. :func:`sha256_file_unchanged` remembers, for this
process, the digest of a file whose identity and stat are unchanged (device, inode, size,
modification time in ns): the nightly flow runs many samples in one process, and each run records
the models' checksums, so without it every sample re-read the 5.7-GB ESM-2 checkpoint (about 4 s
of CPU at 1.4 GB/s). Any write to the file changes its modification time, so it is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

__all__ = ["FileDigest", "file_digest", "sha256_file", "sha256_file_unchanged"]

_BLOCK_SIZE = 1 << 20

_known: dict[tuple[str, int, int, int, int], str] = {}
_known_lock = threading.Lock()
_reading: dict[tuple[str, int, int, int, int], threading.Lock] = {}  # one reader per file at a time


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the lowercase hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    return file_digest(path).sha256


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's size in bytes and lowercase hex SHA-256, from one read."""

    size: int
    sha256: str


def file_digest(path: str | os.PathLike[str]) -> FileDigest:
    """The size and SHA-256 of the bytes read from ``path`` (one read: they describe the same bytes)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK_SIZE), b""):
            digest.update(block)
            size += len(block)
    return FileDigest(size, digest.hexdigest())


def sha256_file_unchanged(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_file`, computed once per process while the file's stat does not change."""
    real = os.path.realpath(path)
    before = os.stat(real)
    key = (real, before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)
    with _known_lock:
        reading = _reading.setdefault(key, threading.Lock())
    with reading:  # a second caller (the background checksums, a feature stage) waits, reads nothing
        with _known_lock:
            known = _known.get(key)
        if known is not None:
            return known
        digest = sha256_file(real)
        after = os.stat(real)
        if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) == key[1:]:
            with _known_lock:
                _known[key] = digest  # not remembered if the file changed while it was read
        return digest
