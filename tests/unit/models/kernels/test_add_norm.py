"""Residual add + layer norm: the reference against F.layer_norm on CPU; the Triton kernel against
the reference on the device machine (several widths, residual dtypes, output dtypes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from virnucpro.models.kernels.add_norm import (
    add_layer_norm,
    add_layer_norm_reference,
    triton_add_norm_available,
)

_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _inputs(rows: int, cols: int, residual: torch.dtype, device: str = "cpu"):  # type: ignore[no-untyped-def]
    g = torch.Generator(device="cpu").manual_seed(rows * 31 + cols)
    x = (torch.randn(rows, cols, generator=g) * 3).to(residual).to(device)
    y = torch.randn(rows, cols, generator=g).to(torch.bfloat16).to(device)
    w = (1 + 0.1 * torch.randn(cols, generator=g)).to(device)
    b = (0.1 * torch.randn(cols, generator=g)).to(device)
    return x, y, w, b


@pytest.mark.parametrize("residual", [torch.float32, torch.bfloat16])
def test_reference_adds_in_place_and_normalises_in_fp32(residual: torch.dtype) -> None:
    x, y, w, b = _inputs(5, 40, residual)
    before = x.clone()
    out, h = add_layer_norm_reference(x, y, w, b, 1e-5, torch.bfloat16)
    assert out is x and x.dtype == residual
    assert torch.equal(x, (before + y).to(residual))
    assert h.dtype == torch.bfloat16
    want = F.layer_norm(x.float(), (40,), w, b, 1e-5).to(torch.bfloat16)
    assert torch.equal(h, want)
    assert add_layer_norm(x.clone(), y, w, b, 1e-5, torch.float32)[1].dtype == torch.float32  # CPU: reference


def test_reference_without_storing_the_sum_leaves_x_alone() -> None:
    x, y, w, b = _inputs(5, 40, torch.bfloat16)
    before = x.clone()
    _, stored = add_layer_norm_reference(x.clone(), y, w, b, 1e-5, torch.bfloat16)
    out, h = add_layer_norm_reference(x, y, w, b, 1e-5, torch.bfloat16, store_sum=False)
    assert out is x and torch.equal(x, before)  # post-LN callers only need the norm
    assert torch.equal(h, stored)


def test_triton_is_not_claimed_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert not triton_add_norm_available()


@pytest.mark.gpu
@_needs_cuda
@pytest.mark.parametrize("cols", [40, 256, 2560, 3000])
@pytest.mark.parametrize("residual", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_gpu_triton_matches_reference(cols: int, residual: torch.dtype, out_dtype: torch.dtype) -> None:
    assert triton_add_norm_available()
    x, y, w, b = _inputs(1031, cols, residual, "cuda")
    x_ref = x.clone()
    x_ref, h_ref = add_layer_norm_reference(x_ref, y, w, b, 1e-5, out_dtype)
    x_got, h_got = add_layer_norm(x, y, w, b, 1e-5, out_dtype)
    assert x_got is x and torch.equal(x_got, x_ref)  # the rounded sum is exact
    # fp32: rounding of the sums; bf16 output: at most one unit in the last place (2^-7 relative)
    rtol = 1e-5 if out_dtype == torch.float32 else 2**-7
    torch.testing.assert_close(h_got.float(), h_ref.float(), rtol=rtol, atol=1e-5)


@pytest.mark.gpu
@_needs_cuda
def test_gpu_triton_without_storing_the_sum() -> None:
    x, y, w, b = _inputs(1031, 768, torch.bfloat16, "cuda")
    before = x.clone()
    _, h_ref = add_layer_norm_reference(x.clone(), y, w, b, 1e-5, torch.bfloat16)
    _, h_got = add_layer_norm(x, y, w, b, 1e-5, torch.bfloat16, store_sum=False)
    assert torch.equal(x, before)
    torch.testing.assert_close(h_got.float(), h_ref.float(), rtol=2**-7, atol=1e-5)
