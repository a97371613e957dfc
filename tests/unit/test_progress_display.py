"""The CLI's progress: a bar redrawn in place on a terminal, plain lines (no carriage returns) in a log."""

from __future__ import annotations

import io

from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.work_queue import Progress
from virnucpro.progress_display import LINE_EVERY_S, ProgressDisplay, bar_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _p(done: int, total: int = 1000, shards_done: int = 0, seconds: float = 2.0) -> Progress:
    return Progress(FeatureStage.ESM, shards_done=shards_done, shards_total=2, frames_done=done,
                    tokens_done=done * 150, seconds=seconds, frames_total=total)


def test_the_bar_line_says_how_far_how_fast_and_how_long() -> None:
    line = bar_line(_p(500), width=10)
    assert line.startswith("ESM-2 [#####.....]  50% 500/1,000 frames")
    assert "250 frames/s" in line and "2 s left" in line
    assert "s left" not in bar_line(_p(1000, shards_done=2))
    assert "frames/s" not in bar_line(_p(0))


def test_a_terminal_gets_one_line_redrawn_in_place_and_ended_with_the_stage() -> None:
    clock = [0.0]
    out = Terminal()
    show = ProgressDisplay(out, clock=lambda: clock[0])
    for done in (100, 200, 300):
        clock[0] += 1.0
        show(_p(done))
    show(_p(1000, shards_done=2))
    text = out.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\n")
    assert "300/1,000 frames" in text and "100%" in text


def test_a_log_gets_plain_lines_at_most_every_ten_seconds_and_the_last() -> None:
    clock = [0.0]
    out = io.StringIO()
    show = ProgressDisplay(out, clock=lambda: clock[0])
    for step in range(30):
        clock[0] = step * 1.0
        show(_p(10 * step))
    show(_p(1000, shards_done=2))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 30 // int(LINE_EVERY_S) + 1  # t = 0, 10, 20 and the stage's end
    assert all(line.startswith("  ESM-2: ") for line in lines)


def test_close_ends_a_bar_left_open() -> None:
    out = Terminal()
    show = ProgressDisplay(out, clock=lambda: 0.0)
    show(_p(10))
    show.close()
    assert out.getvalue().endswith("\n")
    show.close()  # twice is fine
    assert out.getvalue().count("\n") == 1


def test_a_log_message_during_a_bar_gets_its_own_line() -> None:
    import logging

    out = Terminal()
    show = ProgressDisplay(out, clock=lambda: 0.0)
    handler = logging.StreamHandler(out)
    handler.addFilter(show.logging_filter())
    log = logging.getLogger("test.progress")
    log.addHandler(handler)
    log.propagate = False
    try:
        show(_p(10))
        log.warning("a worker was replaced")
    finally:
        log.removeHandler(handler)
    bar, message = out.getvalue().split("\n")[:2]
    assert bar.startswith("\rESM-2 [") and message == "a worker was replaced"
