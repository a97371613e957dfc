"""Which precision a run uses when the user did not choose one."""

from __future__ import annotations

from virnucpro.config import Precision, RunConfig

__all__ = ["GPU_DEFAULT_PRECISION", "effective_precision"]

GPU_DEFAULT_PRECISION = Precision.FP32
"""The GPU default keeps the original's (fp32) numbers. Faster precisions are opt-in
(``--precision bf16``) with the agreement measured in docs/benchmarks.md and checkable on your own
weights with ``virnucpro validate-precision``."""


def effective_precision(config: RunConfig, on_gpu: bool) -> Precision:
    if config.precision is not None:
        return config.precision
    return GPU_DEFAULT_PRECISION if on_gpu else Precision.FP32
