"""The console entry point's exit: threads joined, exit handlers run, streams flushed, code kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import virnucpro


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120)


def test_exit_now_keeps_what_a_normal_exit_does(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    done = _run(f"""
        import atexit, threading, time, sys
        from virnucpro.process_exit import exit_now

        def mark(text):
            with open({str(marks)!r}, "a") as f:
                f.write(text + "\\n")

        atexit.register(mark, "atexit")
        threading.Thread(target=lambda: (time.sleep(0.3), mark("thread"))).start()
        sys.stdout.write("buffered, no newline")   # a pipe: block-buffered until flushed
        sys.stderr.write("to stderr")
        exit_now(3)
        mark("after exit_now")                     # never reached
        """)
    assert done.returncode == 3
    assert done.stdout == "buffered, no newline"
    assert done.stderr == "to stderr"
    # the non-daemon thread finished before the exit handlers ran, as at a normal exit
    assert marks.read_text().splitlines() == ["thread", "atexit"]


def test_exit_now_survives_a_closed_stdout() -> None:
    done = _run("""
        import os, sys
        from virnucpro.process_exit import exit_now
        sys.stdout.write("lost")
        os.close(1)
        exit_now(0)
        """)
    assert done.returncode == 0


def test_console_main_exits_zero_and_prints_on_success() -> None:
    done = subprocess.run([sys.executable, "-m", "virnucpro.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert virnucpro.__version__ in done.stdout


def test_console_main_keeps_an_error_exit(tmp_path: Path) -> None:
    missing = tmp_path / "missing.fa"
    done = subprocess.run([sys.executable, "-m", "virnucpro.cli", "prepare", str(missing),
                           "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode not in (0, None)
    assert "missing.fa" in done.stderr
