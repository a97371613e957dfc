"""The one rule of every Triton kernel (:class:`TritonKernel`): built once, off without CUDA or
triton, and after one failed launch off for good with one warning, out-of-memory excepted."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from virnucpro.models.kernels.triton_support import TritonKernel


class _Launcher:
    """What ``kernel[grid]`` returns: records the calls, raises ``error`` if given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[object, ...]] = []

    def __getitem__(self, grid: tuple[int, ...]):  # type: ignore[no-untyped-def]
        def run(*args: object, **kwargs: object) -> None:
            self.calls.append((grid, args, kwargs))
            if self.error is not None:
                raise self.error

        return run


def test_builds_once_and_launches_with_the_grid_and_arguments() -> None:
    built: list[int] = []
    launcher = _Launcher()
    kernel = TritonKernel("test kernel", lambda: built.append(1) or launcher)
    assert kernel.launch((3, 2), "x", 7, BLOCK=64, num_warps=4)
    assert kernel.launch((1,), "y")
    assert built == [1]
    assert launcher.calls == [((3, 2), ("x", 7), {"BLOCK": 64, "num_warps": 4}), ((1,), ("y",), {})]
    assert kernel.failed is None


def test_a_failed_launch_turns_the_kernel_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    kernel = TritonKernel("test kernel", lambda: _Launcher(RuntimeError("PTX too new\nmore")))
    with caplog.at_level(logging.WARNING):
        assert not kernel.launch((1,))
        assert not kernel.launch((1,))
    assert kernel.failed == "RuntimeError: PTX too new\nmore"
    assert not kernel.usable()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Triton test kernel failed (RuntimeError: PTX too new); using PyTorch"]


def test_a_build_that_fails_is_a_failed_launch() -> None:
    def build() -> object:
        raise ImportError("No module named 'triton'")

    kernel = TritonKernel("test kernel", build)
    assert not kernel.launch((1,))
    assert kernel.failed == "ImportError: No module named 'triton'"


def test_out_of_memory_is_raised_and_does_not_turn_the_kernel_off() -> None:
    kernel = TritonKernel("test kernel", lambda: _Launcher(torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(torch.OutOfMemoryError):
        kernel.launch((1,))
    assert kernel.failed is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer")
def test_unavailable_without_cuda() -> None:
    built: list[int] = []
    kernel = TritonKernel("test kernel", lambda: built.append(1) or _Launcher())
    assert not kernel.available() and not kernel.usable()
    assert built == []  # nothing is built (or imported) without a CUDA device


def test_every_models_module_imports_and_runs_the_reference_without_triton() -> None:
    """Triton is an optional import: with it made unimportable, every module of the package
    imports and the kernels report themselves unavailable (their callers use the reference)."""
    code = """
import importlib, pkgutil, sys
sys.modules["triton"] = None  # any 'import triton' now raises ImportError
import virnucpro.models as models
for info in pkgutil.walk_packages(models.__path__, "virnucpro.models."):
    importlib.import_module(info.name)
from virnucpro.models.kernels import add_norm, alibi_varlen, geglu_gemm
assert not add_norm.triton_add_norm_available()
assert not alibi_varlen.triton_alibi_available()
assert not geglu_gemm.triton_geglu_available()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_triton_s_cache_key_is_computed_ahead_when_there_is_triton() -> None:
    """In a fresh process: with Triton, the thread leaves the key cached for the first kernel
    lookup; without it (made unimportable here), nothing starts."""
    code = """
import sys
if sys.argv[1] == "without":
    sys.modules["triton"] = None
from virnucpro.models.kernels.triton_support import prefetch_cache_key
thread = prefetch_cache_key()
if thread is None:
    print("none")
else:
    thread.join(120)
    from triton.runtime.cache import triton_key
    print("cached" if triton_key.cache_info().currsize == 1 else "not cached")
"""
    try:
        import triton  # noqa: F401
        have = True
    except ImportError:
        have = False
    for mode, expected in (("without", "none"), ("as installed", "cached" if have else "none")):
        done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == expected, (mode, done.stdout, done.stderr)
