"""Ending a finished console run without the interpreter's teardown.

After ``virnucpro predict`` has printed its last line, a normal interpreter exit still frees every
object of the run one at a time and unloads torch's modules: 0.6–0.8 s of a 20,000-chunk run on
the CPU in which nothing is written and nothing is shown. :func:`exit_now` does what a normal exit
does that matters to a user, in the same order, and then ends the process at once:

1. waits for the threads that are not daemons (as the interpreter does before its exit handlers);
2. runs the :mod:`atexit` handlers (logging's flush and close, multiprocessing's clean-up of its
   workers and resource tracker, any a library registered);
3. flushes ``sys.stdout`` and ``sys.stderr``;
4. ``os._exit(code)``.

Only the console entry points call it, and only after a command returned normally: an error or an
interrupt leaves through the interpreter's usual path (its traceback or message, its exit code).
Nothing is done at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

__all__ = ["exit_now"]


def _join_non_daemon_threads() -> None:
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon and thread is not threading.main_thread():
            thread.join()


def _flush(stream: object) -> None:
    flush = getattr(stream, "flush", None)
    if flush is None:
        return
    with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing can reach it
        flush()


def exit_now(code: int = 0) -> NoReturn:
    """End the process with ``code`` after the threads, the exit handlers and the streams (above)."""
    _join_non_daemon_threads()
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own list, run as at a normal exit
    _flush(sys.stdout)
    _flush(sys.stderr)
    os._exit(code)
