"""SIGTERM as a clean stop, like Ctrl-C: the entry points' ``main`` functions use
:func:`sigterm_stops`, so a terminated run raises :class:`~virnucpro.errors.Terminated` (a
``KeyboardInterrupt``) in the main thread. The stages' cleanup then runs as for Ctrl-C: the worker
pool ends its workers at once, finished shards stay on disk, and the entry point prints one line and
exits with 143 (128 + SIGTERM). A second SIGTERM during that cleanup ends the process at once.

Nothing is installed at import time: only inside the ``with`` block, in the main thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from virnucpro.errors import Terminated

__all__ = ["sigterm_stops", "TERMINATED_MESSAGE", "INTERRUPTED_MESSAGE"]

TERMINATED_MESSAGE = (
    "Terminated (SIGTERM): the workers were stopped; finished shards are kept and a re-run resumes."
)
INTERRUPTED_MESSAGE = "Interrupted; finished shards are kept and a re-run resumes."


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated(f"signal {signum} (SIGTERM)")


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous
    handler is restored afterwards. Off the main thread (signals cannot be set there) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
