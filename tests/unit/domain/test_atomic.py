"""Atomic writes: a file appears only complete, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from virnucpro.domain.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_write_text(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "héllo\nworld\n")
    assert path.read_bytes() == "héllo\nworld\n".encode()
    assert list(tmp_path.iterdir()) == [path]


def test_no_newline_translation(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "a\r\nb\n")
    assert path.read_bytes() == b"a\r\nb\n"


def test_write_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


def test_exception_inside_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as handle:
        handle.write("new")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_file_is_invisible_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_open(path) as handle:
        handle.write("data")
        assert not path.exists()
    assert path.read_text() == "data"


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    old = os.umask(0o022)
    try:
        atomic_write_text(path, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_only_write_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="modes"), atomic_open(tmp_path / "x", "a"):
        pass


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")
