"""Time a command's end: seconds from its last output line to its exit.

    python bench/time_to_exit.py virnucpro predict examples/example.fa.gz --output-dir DIR
"""

from __future__ import annotations

import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = last = time.perf_counter()
    assert proc.stdout is not None
    for _ in proc.stdout:
        last = time.perf_counter()
    proc.wait()
    end = time.perf_counter()
    sys.stdout.write(f"total {end - started:.2f} s, last line -> exit {end - last:.3f} s, rc {proc.returncode}\n")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
