"""Disk errors as messages: a full, read-only or unwritable file system ends the run with exit 5.

An ``OSError`` whose errno says the disk, not the program, is the problem (``ENOSPC``,
``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM``) becomes a :class:`~virnucpro.errors.DiskError` naming
the path, what is wrong and the fix; for a full disk also the free space left and, when known, the
size of the file being written. Every write of the package goes through :func:`disk_errors` (via
:func:`~virnucpro.domain.atomic.atomic_open`); any other ``OSError`` passes unchanged. Retrying
cannot help with any of these, so a worker reports the errno and the run stops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from virnucpro.errors import DiskError

__all__ = ["DISK_ERRNOS", "disk_error", "disk_errors", "is_disk_error", "format_size"]

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""The errnos of a file system that cannot take the write (not of a bug, not transient)."""


def format_size(n_bytes: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def disk_error(
    exc: OSError,
    path: str | os.PathLike[str] | None = None,
    size: int | None = None,
    *,
    name_path: bool = False,
) -> DiskError | None:
    """The :class:`DiskError` for ``exc``, or None when its errno is not a disk problem.

    The path named is the one in ``exc`` if it has one (``name_path``: always ``path``), else
    ``path``; ``size`` is the number of bytes the write needed, if known.
    """
    if exc.errno not in DISK_ERRNOS:
        return None
    if exc.filename and not (name_path and path is not None):
        where = Path(os.fsdecode(exc.filename))
    else:
        where = Path(path or ".")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        free = _free_space(where)
        needs = f"; this file needs {format_size(size)}" if size else ""
        message = (
            f"{where}: {what} ({free}{needs}). Free some space, or give an --output-dir on a "
            "larger disk, and re-run; finished work in the output directory is kept and resumed."
        )
    elif code == errno.EROFS:
        message = (
            f"{where}: the file system is read-only. Give an --output-dir on a writable disk and "
            "re-run."
        )
    else:
        message = (
            f"{where}: permission denied ({exc.strerror}). Make it writable for this user, or give "
            "another --output-dir, and re-run."
        )
    return DiskError(message, errno=code)


def is_disk_error(exc: object) -> bool:
    """True for a :class:`DiskError` or an ``OSError`` with a disk errno: retrying cannot help."""
    return isinstance(exc, DiskError) or (isinstance(exc, OSError) and exc.errno in DISK_ERRNOS)


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike[str], size: int | None = None) -> Iterator[None]:
    """Turn a disk ``OSError`` raised in the block into a :class:`DiskError` (see above)."""
    try:
        yield
    except OSError as exc:
        error = disk_error(exc, path, size)
        if error is None:
            raise
        raise error from exc


def _free_space(path: Path) -> str:
    """``1.2 MiB free on /mnt/x`` for the file system holding ``path`` (or its nearest parent)."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    mount = folder
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"{format_size(free)} free on {mount}"
