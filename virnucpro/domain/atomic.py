"""Atomic file writes: a file appears under its final name only once it is complete.

Every output of the package is written through :func:`atomic_open` (or :func:`atomic_write_text`):
the data goes to a hidden temporary file in the same directory, is flushed and ``fsync``-ed, and
is then renamed over the final path with :func:`os.replace` (atomic on POSIX file systems). If
anything raises inside the ``with`` block, the temporary file is removed and the final path is left
untouched, so an interrupted run never leaves a file that looks complete.

The temporary file is created with the usual ``0o666 & ~umask`` permissions (not ``0o600`` as
:func:`tempfile.mkstemp` would), so outputs are as readable as files written with plain ``open``.

A full, read-only or unwritable disk raises :class:`~virnucpro.errors.DiskError` naming the final
path (see :mod:`virnucpro.domain.disk`). A writer killed mid-write (SIGKILL) leaves its temporary
file; :func:`remove_stale_temps` removes those of one path once the writer is known dead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from virnucpro.domain.disk import disk_error
from virnucpro.errors import DiskError

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_bytes", "remove_stale_temps"]

_WRITE_MODES = frozenset({"w", "wt", "wb"})
_CREATE_ATTEMPTS = 100


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty, hidden temp file beside ``path``; return its descriptor and path."""
    for _ in range(_CREATE_ATTEMPTS):
        temp = path.with_name(f"{_temp_prefix(path)}{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return fd, temp
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: str | os.PathLike[str]) -> int:
    """Remove the temporary files :func:`atomic_open` left beside ``path`` (their writer died);
    return how many. Call it only when no writer of ``path`` is running."""
    target = Path(path)
    removed = 0
    with contextlib.suppress(OSError):  # the directory is gone: nothing to remove
        for temp in target.parent.glob(f"{_temp_prefix(target)}*.tmp"):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed


def _fsync_directory(directory: Path) -> None:
    """Persist a rename in ``directory`` (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str = "utf-8",
    size: int | None = None,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it is replaced only when the ``with`` block succeeds.

    ``mode`` is ``"w"``/``"wt"`` (text, ``encoding``, no newline translation) or ``"wb"``. The
    parent directory must exist. On an exception the temporary file is deleted and the exception
    re-raised; a disk ``OSError`` (full, read-only, permission) as a ``DiskError`` naming
    ``path`` and, for a full disk, the free space and ``size`` (the bytes to write, if known).
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_open supports modes 'w', 'wt' and 'wb', not {mode!r}")
    target = Path(path)
    try:
        fd, temp = _create_temp(target)
    except OSError as exc:
        error = _disk_error(exc, target, size)
        if error is None:
            raise
        raise error from exc
    try:
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline="")
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        error = _disk_error(exc, target, size)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _disk_error(exc: OSError, target: Path, size: int | None) -> DiskError | None:
    """The DiskError for ``exc``, naming ``target`` (not its temporary file); None if not a disk
    error. An error about another file (read in the ``with`` block) names that file."""
    other = None
    if exc.filename is not None:
        named = Path(os.fsdecode(exc.filename))
        if not (named.parent == target.parent and named.name.startswith(_temp_prefix(target))):
            other = named
    return disk_error(exc, other or target, size, name_path=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
