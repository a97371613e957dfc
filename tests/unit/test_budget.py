"""The token-budget rule: explicit override, CPU default, free GPU memory, warm-up, halving."""

from __future__ import annotations

import pytest
import torch

from virnucpro.config import Precision
from virnucpro.pipeline.budget import (
    CPU_TOKEN_BUDGET,
    CPU_WARMUP_TOKENS,
    MAX_GPU_TOKEN_BUDGET,
    MIN_TOKEN_BUDGET,
    WARMUP_TOKENS,
    batch_budget,
    halved_budget,
    token_budget,
    warmup_tokens,
)

CPU = torch.device("cpu")


def test_budget_from_free_memory_is_half_of_it_within_bounds() -> None:
    # ESM-2 3B in bf16: 24 values of 2560 x 2 bytes per token; half of 20 GiB
    assert token_budget(20 * 2**30, 2560, 2) == int(10 * 2**30 // (24 * 2560 * 2))
    assert token_budget(20 * 2**30, 2560, 4) < token_budget(20 * 2**30, 2560, 2)  # fp32: half
    assert token_budget(0, 2560, 2) == MIN_TOKEN_BUDGET
    assert token_budget(10**15, 768, 2) == MAX_GPU_TOKEN_BUDGET


def test_explicit_budget_wins_and_the_cpu_has_a_fixed_one() -> None:
    assert batch_budget(CPU, 2560, Precision.FP32) == CPU_TOKEN_BUDGET
    assert batch_budget(CPU, 2560, Precision.FP32, toks_per_batch=1000) == 1000
    assert warmup_tokens(CPU, 2560, Precision.FP32) == CPU_WARMUP_TOKENS
    assert warmup_tokens(CPU, 2560, Precision.FP32, toks_per_batch=1000) == 1000
    assert warmup_tokens(CPU, 2560, Precision.FP32, toks_per_batch=10**6) == WARMUP_TOKENS


def test_out_of_memory_halves_down_to_the_minimum() -> None:
    assert halved_budget(10_000) == 5_000
    assert halved_budget(300) == MIN_TOKEN_BUDGET


@pytest.mark.gpu
def test_gpu_budget_follows_free_memory() -> None:
    device = torch.device("cuda:0")
    free, _total = torch.cuda.mem_get_info(device)
    assert batch_budget(device, 2560, Precision.BF16) == token_budget(free, 2560, 2)
    assert batch_budget(device, 2560, Precision.FP32) == token_budget(free, 2560, 4)
    assert warmup_tokens(device, 2560, Precision.BF16) == min(token_budget(free, 2560, 2),
                                                              WARMUP_TOKENS)
