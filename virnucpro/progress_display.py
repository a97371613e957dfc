"""The CLI's progress display: a bar redrawn in place on a terminal, plain lines in a log.

On a terminal (stderr is a TTY) each feature stage gets one line, redrawn at most
:data:`REDRAW_EVERY_S` apart: ``ESM-2 [##########..........] 52% 7,352/14,138 frames, 612 frames/s,
11 s left``; the stage's last update ends the line. Anywhere else (a log file, a pipe, a
scheduler's capture) no carriage returns are written: a plain line every :data:`LINE_EVERY_S`
seconds and one when the stage's shards are all done (:meth:`Progress.describe`'s words). A log
message written while a bar is drawn first ends the bar's line (:meth:`ProgressDisplay.logging_filter`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from virnucpro.pipeline.work_queue import Progress

__all__ = ["ProgressDisplay", "bar_line", "LINE_EVERY_S", "REDRAW_EVERY_S"]

LINE_EVERY_S = 10.0
REDRAW_EVERY_S = 0.25
BAR_WIDTH = 24


def bar_line(p: Progress, width: int = BAR_WIDTH) -> str:
    """One terminal line of ``p``: the stage, a bar, percent, frames, rate and time left."""
    filled = int(round(p.fraction * width))
    head = f"{p.stage.label} [{'#' * filled}{'.' * (width - filled)}] {p.fraction:4.0%}"
    line = f"{head} {p.frames_done:,}/{p.frames_total:,} frames"
    if p.frames_done:
        line += f", {p.frames_per_s:,.0f} frames/s"
        eta = p.eta_seconds
        if eta is not None and p.frames_done < p.frames_total:
            line += f", {eta:,.0f} s left"
    return line


class ProgressDisplay:
    """A ``run_prediction(on_progress=...)`` callback writing to ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self._last = -float("inf")
        self._open = ""  # the width of the bar line being redrawn ("" when none)

    def __call__(self, p: Progress) -> None:
        finished = p.shards_done >= p.shards_total
        now = self.clock()
        every = REDRAW_EVERY_S if self.terminal else LINE_EVERY_S
        if not finished and now - self._last < every:
            return
        self._last = now
        if self.terminal:
            line = bar_line(p)
            pad = " " * max(0, len(self._open) - len(line))
            self.stream.write(f"\r{line}{pad}" + ("\n" if finished else ""))
            self._open = "" if finished else line
        else:
            self.stream.write(f"  {p.describe()}\n")
        self.stream.flush()
        if finished:
            self._last = -float("inf")  # the next stage's first update shows at once

    def logging_filter(self) -> "logging.Filter":
        """A filter for the handlers writing to the same stream: a log record first ends an open
        bar line, so the message gets a line of its own (the next update draws the bar again)."""
        display = self

        class _EndBar(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                display.close()
                return True

        return _EndBar()

    def close(self) -> None:
        """End a bar line left open (a run that stopped inside a stage)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = ""
