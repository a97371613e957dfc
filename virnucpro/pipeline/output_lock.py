"""One run at a time per output directory: an advisory ``flock`` held for the whole run.

Two runs writing the same shards and tables would interleave their files; the second one is
refused at once with an error naming the holder, instead.

The lock file ``.virnucpro.lock`` exists only while a run holds it: it is opened with
``O_NOFOLLOW`` (a symlink planted there is refused, never followed), and removed when the run ends
while the run still holds the lock. A run that locks a file checks that the file is still the one
at the path (same inode); if the holder removed it in between, it opens the path again. So two runs
never both believe they hold the directory. An output directory this run created is removed again
at the end if it is empty (a run that failed before writing anything leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from virnucpro.domain.outputs import OutputPaths
from virnucpro.errors import OutputError

__all__ = ["output_lock"]

_OPEN_ATTEMPTS = 50
_MKDIR_ATTEMPTS = 5  # a racing run may remove the empty directory while this one creates it


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return the ones created, deepest first."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for attempt in range(_MKDIR_ATTEMPTS):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            break
        except FileExistsError as exc:
            # another run removed the (empty) directory between mkdir's EEXIST and its is_dir check
            if attempt == _MKDIR_ATTEMPTS - 1 or (directory.exists() and not directory.is_dir()):
                raise OutputError(f"cannot create output directory {directory}: {exc}") from exc
        except OSError as exc:
            raise OutputError(f"cannot create output directory {directory}: {exc}") from exc
    return missing


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the directories this run created, deepest first, if they are empty."""
    for directory in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # fails unless empty: another run's files are never touched
            directory.rmdir()


def _open_lock(lock: Path) -> int | None:
    """The lock file's descriptor; None when its directory vanished (a finishing run removed it)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(
                f"{lock} is a symbolic link; VirNucPro does not follow it. Remove it and re-run"
            ) from None
        raise OutputError(f"cannot create the lock file {lock}: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{lock} is not a regular file; remove it and re-run")
    return fd


def _same_file(fd: int, path: Path) -> bool:
    locked = os.fstat(fd)
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino)


def _acquire(paths: OutputPaths, created: list[Path]) -> int:
    """The descriptor of the locked lock file that is at ``paths.lock`` now (directories made
    again on the way are added to ``created``)."""
    for _ in range(_OPEN_ATTEMPTS):
        fd = _open_lock(paths.lock)
        if fd is None:  # a finishing run removed the (empty) directory it had created: make it again
            created.extend(_make_dirs(paths.output_dir))
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(
                f"{paths.output_dir}: another VirNucPro run (pid {holder}) is writing here; "
                "wait for it to finish or choose another --output-dir"
            ) from None
        if _same_file(fd, paths.lock):
            return fd
        os.close(fd)  # the holder removed the file after we opened it: open the path again
    raise OutputError(f"{paths.lock}: could not take the lock (it keeps being replaced)")


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the output directory's lock for the ``with`` block; raise OutputError if it is taken."""
    paths = OutputPaths.for_dir(output_dir)
    created = _make_dirs(paths.output_dir)
    try:
        fd = _acquire(paths, created)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            if _same_file(fd, paths.lock):  # still holding the lock: nobody else has it
                paths.lock.unlink(missing_ok=True)
        finally:
            os.close(fd)  # releases the flock
            _remove_if_empty(created)
