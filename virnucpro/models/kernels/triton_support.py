"""One rule for every Triton kernel of this package: built once, a failure remembered.

A :class:`TritonKernel` wraps the function that imports triton and defines the kernel (so
importing a kernel module never imports triton). :meth:`~TritonKernel.available`: a CUDA device
is present and the kernel builds (checked once per process). :meth:`~TritonKernel.launch`: runs
it, and if it fails for any reason but running out of memory, remembers why
(:attr:`~TritonKernel.failed`), logs it once and returns False; the caller then uses its PyTorch
reference, as every later call does (:meth:`~TritonKernel.usable`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TritonKernel", "prefetch_cache_key"]

logger = logging.getLogger(__name__)


class TritonKernel:
    """A Triton kernel built on first use by ``build()`` (which imports triton and returns the
    ``@triton.jit`` function); ``name`` is how the warning names it."""

    def __init__(self, name: str, build: Callable[[], Any]) -> None:
        self.name = name
        self._build = build
        self._kernel: Any = None
        self._available: bool | None = None
        self.failed: str | None = None
        """Why a launch failed (``"Type: message"``); None while the kernel is in use."""

    def kernel(self) -> Any:
        """The ``@triton.jit`` function, built the first time (a failed build is retried)."""
        if self._kernel is None:
            self._kernel = self._build()
        return self._kernel

    def available(self) -> bool:
        """A CUDA device is present and the kernel builds; without either (no triton, or one too
        old for this code), callers use their PyTorch reference path. Checked once."""
        if self._available is None:
            self._available = torch.cuda.is_available() and self._builds()
        return self._available

    def _builds(self) -> bool:
        try:
            self.kernel()
        except Exception:  # no triton, or one too old for this code: the reference path is used
            return False
        return True

    def usable(self) -> bool:
        """No launch has failed and the kernel is :meth:`available`."""
        return self.failed is None and self.available()

    def launch(self, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> bool:
        """``kernel[grid](*args, **kwargs)``; False (the caller computes the reference) if it
        failed, which also turns the kernel off for the rest of the process."""
        try:
            self.kernel()[grid](*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # a Triton that cannot build or run the kernel: the reference
            self._fail(exc)
            return False
        return True

    def _fail(self, exc: Exception) -> None:
        if self.failed is None:
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "Triton %s failed (%s); using PyTorch", self.name, self.failed.splitlines()[0][:300]
            )


def prefetch_cache_key() -> threading.Thread | None:
    """Start computing, in a background thread, the key Triton puts in front of every kernel's
    cache entry; the thread, or None where there is no Triton.

    The first kernel a process looks up in Triton's cache makes Triton hash its own installation
    (``triton.runtime.cache.triton_key``: libtriton, hundreds of MB, plus its sources; ~0.5 s on
    an H200 host), and the result is kept for the process. A worker calls this while it reads
    its models, so its warm-up finds the key computed. The hashing releases the GIL. Should
    Triton's internals move, nothing happens here and the first lookup computes the key itself.
    """
    def compute() -> None:
        try:
            from triton.runtime.cache import triton_key

            triton_key()
        except Exception as exc:  # another Triton: its first lookup pays for the key, as before
            logger.debug("Triton's cache key was not computed ahead: %r", exc)

    try:
        import triton  # noqa: F401
    except ImportError:
        return None
    thread = threading.Thread(target=compute, name="triton-cache-key", daemon=True)
    thread.start()
    return thread
