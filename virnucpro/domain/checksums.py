"""Streamed SHA-256 checksums of files (model files, inputs recorded in ``run_info.json``)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]

_BLOCK_SIZE = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the lowercase hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()
