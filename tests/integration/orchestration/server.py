"""A real Prefect server for the tests: what runs it and how it is stopped (plain helpers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PREFECT", "PrefectServer", "free_port", "stop"]

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with everything in its process group."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``: its API URL, and the environment its clients use."""

    url: str
    env: dict[str, str]  # offline, no PREFECT_* of the developer's, PREFECT_API_URL = url
    root: Path
    log: Path
