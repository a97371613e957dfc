"""What both fast runners share: layer functions compiled once, with an eager fallback.

One layer of each encoder is one pure function of tensors (:func:`~.esm2.esm_layer`,
:func:`~.dnabert.dnabert_layer`); with ``compile=True`` it goes through ``torch.compile`` ONCE
per process (:class:`CompiledFunction`) and every layer reuses the graph (weights are arguments,
not module attributes, so 36 layers share one compilation). Batch and length dimensions are
marked dynamic, so new shapes do not recompile; at most two graphs exist per model (with and
without an attention mask). Inductor fuses layer norm + cast, q scaling + rotary (both q and k)
and GELU into a handful of kernels per layer.

A compiled call that fails for any reason but running out of memory logs a warning and falls
back to the eager function, which computes the same thing, for calls of that signature (with or
without a mask) from then on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "CompiledFunction",
    "compile_default",
    "use_flash_and_efficient_attention",
    "COMPILE_ENV",
]

logger = logging.getLogger(__name__)

COMPILE_ENV = "VIRNUCPRO_COMPILE"
"""``0`` turns ``torch.compile`` off everywhere; ``1`` turns it on (also for fp32)."""


def use_flash_and_efficient_attention(device: torch.device) -> None:
    """On CUDA, keep SDPA on its flash / memory-efficient kernels, never cuDNN attention.

    cuDNN attention builds a plan for every new (batch, length) shape, which costs tens of
    milliseconds per batch when batch shapes vary, as they do here (measured on an H200: the
    DNABERT-S stage ran at a quarter of its kernel-time rate). Process-wide setting.
    """
    if torch.device(device).type == "cuda" and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def compile_default(device: torch.device, dtype: torch.dtype) -> bool:
    """Compile by default on CUDA in bf16/fp16; ``$VIRNUCPRO_COMPILE`` (0/1) overrides."""
    forced = os.environ.get(COMPILE_ENV, "").strip()
    if forced in {"0", "1"}:
        return forced == "1"
    return torch.device(device).type == "cuda" and dtype in (torch.bfloat16, torch.float16)


class CompiledFunction:
    """``torch.compile`` of a function, made once, with dynamic batch/length and an eager fallback.

    ``dynamic_dims`` maps a positional argument index to the dimensions marked dynamic
    (``maybe_mark_dynamic``). A call where one of those dimensions is 1 (a batch of one
    sequence) runs eagerly instead of compiling a specialised graph for it.
    """

    _cache: dict[tuple[Callable[..., Any], str], Callable[..., Any]] = {}

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        enabled: bool,
        backend: str = "inductor",
        dynamic_dims: dict[int, Sequence[int]] | None = None,
    ) -> None:
        self.fn = fn
        self.enabled = enabled
        self.backend = backend
        self.dynamic_dims = dict(dynamic_dims or {})
        self.failed: str | None = None  # the last compile error, if any
        self._failed: set[tuple[bool, ...]] = set()  # call signatures that run eagerly
        self.calls = 0
        self.eager_calls = 0

    def _compiled(self) -> Callable[..., Any]:
        key = (self.fn, self.backend)
        if key not in self._cache:
            self._cache[key] = torch.compile(self.fn, backend=self.backend, dynamic=None)
        return self._cache[key]

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        signature = tuple(a is None for a in args)  # e.g. with / without an attention mask
        if not self.enabled or signature in self._failed:
            return self.fn(*args)
        marks = []
        for index, dims in self.dynamic_dims.items():
            tensor = args[index]
            if isinstance(tensor, torch.Tensor):
                if any(tensor.shape[d] == 1 for d in dims):
                    self.eager_calls += 1  # a size-1 dimension would specialise: one more graph
                    return self.fn(*args)
                marks.extend((tensor, d) for d in dims)
        for tensor, dim in marks:
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
        try:
            return self._compiled()(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compiler missing or broken: the eager path is the same function
            self._failed.add(signature)
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "torch.compile of %s failed (%s); using the eager version for these calls",
                self.fn.__name__, self.failed.splitlines()[0][:300],
            )
            return self.fn(*args)

