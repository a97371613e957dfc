"""One run at a time per output directory: an advisory ``flock`` held for the whole run.

Two runs writing the same shards and tables would interleave their files; the second one is
refused at once with an error naming the holder, instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from virnucpro.domain.outputs import OutputPaths
from virnucpro.errors import OutputError

__all__ = ["output_lock"]


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the output directory's lock for the ``with`` block; raise OutputError if it is taken."""
    paths = OutputPaths.for_dir(output_dir)
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {paths.output_dir}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputError(
                f"{paths.output_dir}: another VirNucPro run (pid {holder}) is writing here; "
                "wait for it to finish or choose another --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
