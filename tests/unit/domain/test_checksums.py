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


def test_unchanged_file_is_hashed_once_per_process(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from virnucpro.domain import checksums

    reads: list[str] = []
    real_sha256 = checksums.sha256_file

    def counting(path):  # type: ignore[no-untyped-def]
        reads.append(str(path))
        return real_sha256(path)

    monkeypatch.setattr(checksums, "sha256_file", counting)
    monkeypatch.setattr(checksums, "_known", {})
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights v1")
    first = checksums.sha256_file_unchanged(path)
    link = tmp_path / "link.pt"
    link.symlink_to(path)
    assert checksums.sha256_file_unchanged(path) == first
    assert checksums.sha256_file_unchanged(link) == first  # same file through a link
    assert first == hashlib.sha256(b"weights v1").hexdigest() and len(reads) == 1
    # rewritten in place, same size: the new modification time means a new digest
    path.write_bytes(b"weights v2")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert checksums.sha256_file_unchanged(path) == hashlib.sha256(b"weights v2").hexdigest()
    assert len(reads) == 2


def test_file_digest_is_size_and_sha256_of_one_read(tmp_path: Path) -> None:
    from virnucpro.domain.checksums import FileDigest, file_digest

    data = bytes(range(256)) * 5_000  # several blocks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_digest(path) == FileDigest(len(data), hashlib.sha256(data).hexdigest())
    path.write_bytes(b"")
    assert file_digest(path) == FileDigest(0, hashlib.sha256(b"").hexdigest())
