"""scripts/torch_install.py: which torch set-up installs, decided from the GPU and the CPU index."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "torch_install.py"
_spec = importlib.util.spec_from_file_location("torch_install", _SCRIPT)
assert _spec is not None and _spec.loader is not None
ti = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ti)


@contextlib.contextmanager
def _index(tmp_path: Path) -> Iterator[str]:
    """A real local HTTP package index with a ``torch/`` page."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<html></html>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_decisions() -> None:
    assert ti.pip_arguments(gpu=True, cpu_index="http://x/cpu") == ["torch>=2.4,<2.15"]
    assert ti.pip_arguments(gpu=True, cpu_index=None) == ["torch>=2.4,<2.15"]
    assert ti.pip_arguments(gpu=False, cpu_index="http://x/cpu") == ["torch==2.13.0", "--index-url", "http://x/cpu"]
    assert ti.pip_arguments(gpu=False, cpu_index=None) == ["torch==2.13.0"]


def test_default_index_is_pytorchs_cpu_index_and_the_variable_overrides_it(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert ti.DEFAULT_CPU_INDEX.endswith("/whl/cpu")
    with _index(tmp_path) as url:
        assert ti.main(["--no-gpu"], environ={"VIRNUCPRO_TORCH_CPU_INDEX": url}) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["torch==2.13.0", "--index-url", url]
    assert "CPU build" in out.err and url in out.err


def test_unreachable_index_falls_back_to_the_plain_pin(capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{_closed_port()}/whl/cpu"
    assert ti.main(["--no-gpu"], environ={"VIRNUCPRO_TORCH_CPU_INDEX": url}) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["torch==2.13.0"]
    assert "unreachable" in out.err and url in out.err


def test_gpu_keeps_the_range_and_probes_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{_closed_port()}/whl/cpu"
    assert ti.main(["--gpu"], environ={"VIRNUCPRO_TORCH_CPU_INDEX": url}) == 0
    assert capsys.readouterr().out.splitlines() == ["torch>=2.4,<2.15"]


def test_an_index_that_never_answers_does_not_hang() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.monotonic()
        ok, why = ti.index_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/cpu", timeout=0.5)
    assert not ok and "waited at most 0.5 s" in why
    assert time.monotonic() - started < 5


def test_http_error_is_unreachable(tmp_path: Path) -> None:
    with _index(tmp_path) as url:
        ok, why = ti.index_reachable(url + "missing")
    assert not ok and "HTTP 404" in why


@pytest.mark.parametrize("present", [True, False])
def test_gpu_detection_uses_nvidia_smi(present: bool, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if present:
        tool = tmp_path / "nvidia-smi"
        tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-x)'\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ti.has_nvidia_gpu() is present
