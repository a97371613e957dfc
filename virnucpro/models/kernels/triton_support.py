"""Whether a Triton kernel of this package can run here (one rule for every kernel module)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["kernel_builds"]


def kernel_builds(build: Callable[[], object]) -> bool:
    """A CUDA device is present and ``build()`` (which imports triton and defines the kernel)
    succeeds; without either, callers use their PyTorch reference path."""
    if not torch.cuda.is_available():
        return False
    try:
        build()
    except Exception:  # no triton, or one too old for this code: the reference path is used
        return False
    return True
