"""Streamed SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from virnucpro.domain.checksums import sha256_file


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # 2.5 MB: several blocks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
