"""A full, read-only or unwritable disk: a DiskError (exit 5) naming the path and the fix, never
a traceback; the write leaves no temporary file and keeps the previous version."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnucpro.domain import atomic
from virnucpro.domain.atomic import atomic_open, atomic_write_text, remove_stale_temps
from virnucpro.domain.disk import disk_error, disk_errors, format_size
from virnucpro.errors import DiskError, OutputError


def _error(code: int, filename: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), filename)


def test_each_disk_errno_names_the_path_and_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.txt"
    full = disk_error(_error(errno.ENOSPC), target, size=3 * 2**20)
    assert isinstance(full, DiskError) and isinstance(full, OutputError) and full.exit_code == 5
    assert full.errno == errno.ENOSPC
    assert str(full).startswith(f"{target}: no space left on the device (")
    assert " free on /" in str(full) and "this file needs 3.0 MiB" in str(full)
    assert "Free some space" in str(full) and "resumed" in str(full)
    assert "disk quota exceeded" in str(disk_error(_error(errno.EDQUOT), target))
    assert "read-only" in str(disk_error(_error(errno.EROFS), target))
    denied = disk_error(_error(errno.EACCES, "/elsewhere/f.npz"), target)
    assert str(denied).startswith("/elsewhere/f.npz: permission denied")  # the file the OS named
    assert "Make it writable" in str(denied)
    assert disk_error(_error(errno.ENOENT), target) is None  # not a disk problem: passes unchanged
    with pytest.raises(FileNotFoundError), disk_errors(target):
        raise _error(errno.ENOENT)
    with pytest.raises(DiskError, match="read-only"), disk_errors(target):
        raise _error(errno.EROFS)
    again = pickle.loads(pickle.dumps(full))
    assert (str(again), again.errno) == (str(full), full.errno)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1536, 5 * 2**30, 3 * 2**40)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 GiB", "3.0 TiB",
    ]  # fmt: skip


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fsync(fd: int) -> None:
        raise _error(code)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


def test_full_disk_at_the_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.tsv"
    path.write_text("previous run\n")
    _fail_fsync(monkeypatch, errno.ENOSPC)
    with pytest.raises(DiskError, match=rf"^{path}: no space left on the device \(.* free on "):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "previous run\n"
    assert os.listdir(tmp_path) == ["table.tsv"]  # no temporary file left


def test_unwritable_directory_names_the_final_path_not_the_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise _error(errno.EACCES, str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(atomic.os, "open", denied)
    with pytest.raises(DiskError, match=rf"^{tmp_path / 'x.txt'}: permission denied"):
        atomic_write_text(tmp_path / "x.txt", "x")


def test_another_error_passes_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "x.txt", "x")
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, DiskError)
    assert os.listdir(tmp_path) == []


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "shard_000001.npz"
    (tmp_path / f".{path.name}.0123456789ab.tmp").write_bytes(b"partial")
    (tmp_path / ".shard_000002.npz.0123456789ab.tmp").write_bytes(b"another file's")
    assert remove_stale_temps(path) == 1
    assert os.listdir(tmp_path) == [".shard_000002.npz.0123456789ab.tmp"]
    assert remove_stale_temps(tmp_path / "gone" / "x.npz") == 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64-KiB file system (root only: mount); skipped where it cannot be mounted."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=10, check=False)


def test_a_really_full_and_a_really_read_only_disk(tiny_tmpfs: Path) -> None:
    np = pytest.importorskip("numpy")
    from virnucpro.pipeline.shards import save_features

    path = tiny_tmpfs / "features" / "shard_000000.npz"
    with pytest.raises(DiskError, match=rf"^{path}: no space left on the device \(.* free on {tiny_tmpfs}; this file needs 782.3 KiB\)"):
        save_features(path, ["a", "b"], np.zeros((2, 100_000), dtype=np.float32))  # 800 kB
    assert os.listdir(path.parent) == []
    with atomic_open(tiny_tmpfs / "small.txt") as handle:
        handle.write("fits\n")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True, timeout=10)
    with pytest.raises(DiskError, match=rf"^{tiny_tmpfs / 'small.txt'}: the file system is read-only"):
        atomic_write_text(tiny_tmpfs / "small.txt", "again\n")
    assert (tiny_tmpfs / "small.txt").read_text() == "fits\n"
