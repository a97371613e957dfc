"""The token budget: how many padded tokens one embedding batch may hold.

One rule for the workers, ``validate-precision`` and the benchmark: an explicit
``toks_per_batch`` wins; on the CPU a fixed budget; on a GPU the budget follows the free device
memory (:func:`token_budget`), read once after the model is loaded. An out-of-memory error
halves the batch that hit it and lowers the budget to half that batch (:func:`halved_budget`).
"""

from __future__ import annotations

from typing import Any

from virnucpro.config import Precision

__all__ = [
    "CPU_TOKEN_BUDGET",
    "MIN_TOKEN_BUDGET",
    "MAX_GPU_TOKEN_BUDGET",
    "WARMUP_TOKENS",
    "CPU_WARMUP_TOKENS",
    "token_budget",
    "batch_budget",
    "warmup_tokens",
    "halved_budget",
]

CPU_TOKEN_BUDGET = 4096
MIN_TOKEN_BUDGET = 256
MAX_GPU_TOKEN_BUDGET = 131072
WARMUP_TOKENS = 65536
"""The compile warm-up batch on a GPU is the budget, at most this many tokens."""
CPU_WARMUP_TOKENS = 512


def token_budget(free_bytes: int, dim: int, elem_bytes: int) -> int:
    """Padded tokens per batch that fit in ``free_bytes`` with room to spare.

    Inference keeps about one layer's activations alive: the residual stream, q/k/v, attention
    output and the 4x feed-forward hidden state, ~24 values of width ``dim`` per token. Half of the
    free memory is used; an out-of-memory error still halves the batch and retries.
    """
    per_token = max(1, dim * 24 * elem_bytes)
    budget = int(free_bytes * 0.5 // per_token)
    return max(MIN_TOKEN_BUDGET, min(MAX_GPU_TOKEN_BUDGET, budget))




def batch_budget(
    device: Any, dim: int, precision: Precision, toks_per_batch: int | None = None
) -> int:
    """The budget for a model of width ``dim`` on ``device`` (a ``torch.device``): the explicit
    ``toks_per_batch``, else :data:`CPU_TOKEN_BUDGET` on the CPU, else from free GPU memory."""
    if toks_per_batch:
        return toks_per_batch
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return token_budget(free, dim, precision.bytes_per_element)


def warmup_tokens(
    device: Any, dim: int, precision: Precision, toks_per_batch: int | None = None
) -> int:
    """Tokens of the compile warm-up batch: realistic (kernels are tuned on it), at most
    :data:`WARMUP_TOKENS`; :data:`CPU_WARMUP_TOKENS` on the CPU unless a budget is given."""
    if not toks_per_batch and device.type != "cuda":
        return CPU_WARMUP_TOKENS
    return min(batch_budget(device, dim, precision, toks_per_batch), WARMUP_TOKENS)


def halved_budget(batch_tokens: int) -> int:
    """The budget after a batch of ``batch_tokens`` padded tokens ran out of memory."""
    return max(MIN_TOKEN_BUDGET, batch_tokens // 2)
