"""Per-row e4m3 quantisation and the fused residual + layer norm + quantisation pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from virnucpro.models.kernels.add_norm import add_layer_norm_fp8, triton_add_norm_available
from virnucpro.models.kernels.fp8_rows import E4M3_MAX, add_layer_norm_fp8_reference, quantize_rows

_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_cuda(test))


def _inputs(rows: int, dim: int, device: str, dtype: torch.dtype = torch.bfloat16):  # type: ignore[no-untyped-def]
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, dim, generator=g, device=device).to(dtype)
    y = torch.randn(rows, dim, generator=g, device=device).to(dtype)
    w = 1 + 0.1 * torch.randn(dim, generator=g, device=device)
    b = 0.1 * torch.randn(dim, generator=g, device=device)
    return x, y, w, b


def test_each_row_fills_the_e4m3_range_and_dequantises_closely() -> None:
    x = torch.randn(5, 300) * torch.tensor([1e-3, 1.0, 50.0, 1e3, 0.0])[:, None]
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    full = q.float().abs().amax(dim=1)
    assert torch.allclose(full[:4], torch.full((4,), E4M3_MAX)) and float(full[4]) == 0.0
    back = q.float() * scale
    assert float(((back - x).abs() / x.abs().amax(dim=1, keepdim=True).clamp(min=1e-30))[:4].max()) < 2**-4


def test_the_reference_is_the_residual_sum_then_the_fp32_norm_quantised() -> None:
    x, y, w, b = _inputs(7, 96, "cpu")
    expected_x = (x + y).to(x.dtype)
    h = F.layer_norm(expected_x.float(), (96,), w, b, 1e-5)
    got_x, q, scale = add_layer_norm_fp8_reference(x.clone(), y, w, b, 1e-5)
    assert torch.equal(got_x, expected_x)
    assert torch.equal(q.float(), quantize_rows(h)[0].float()) and torch.equal(scale, quantize_rows(h)[1])


def test_without_cuda_the_fused_call_is_the_reference() -> None:
    x, y, w, b = _inputs(4, 64, "cpu")
    fused = add_layer_norm_fp8(x.clone(), y, w, b, 1e-5)
    ref = add_layer_norm_fp8_reference(x.clone(), y, w, b, 1e-5)
    assert all(torch.equal(a.float(), r.float()) for a, r in zip(fused, ref))


@gpu
@pytest.mark.parametrize("rows,dim", [(1, 2560), (257, 2560), (4099, 2560), (33, 40)])
def test_gpu_kernel_matches_the_reference(rows: int, dim: int) -> None:
    if not triton_add_norm_available():
        pytest.skip("Triton kernel not available")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("e4m3 stores need compute capability 8.9")
    x, y, w, b = _inputs(rows, dim, "cuda")
    kx, kq, ks = add_layer_norm_fp8(x.clone(), y, w, b, 1e-5)
    rx, rq, rs = add_layer_norm_fp8_reference(x.clone(), y, w, b, 1e-5)
    assert torch.equal(kx, rx)
    assert torch.allclose(ks, rs, rtol=1e-5, atol=0)
    # the same e4m3 value, or its neighbour where fp32 summation order moved a value across a tie
    assert float((kq.float() * ks - rq.float() * rs).abs().max()) <= float(rs.max()) * 32 + 1e-6
    assert float((kq.float() != rq.float()).float().mean()) < 0.01


def test_without_cuda_row_quantisation_is_the_reference() -> None:
    from virnucpro.models.kernels.fp8_quantize import quantize_rows_fused, quantize_rows_reference

    x = torch.randn(6, 96).to(torch.bfloat16)
    for gelu in (False, True):
        got, want = quantize_rows_fused(x, gelu=gelu), quantize_rows_reference(x, gelu=gelu)
        assert torch.equal(got[0].float(), want[0].float()) and torch.equal(got[1], want[1])
    q, scale = quantize_rows_reference(x, gelu=True)
    assert F.cosine_similarity((q.float() * scale).flatten(), F.gelu(x.float()).flatten(), dim=0) > 0.999


def test_fc1s_gelu_is_the_tanh_form_within_a_few_ten_thousandths_of_erf() -> None:
    from virnucpro.models.kernels.fp8_quantize import fc1_gelu

    y = torch.linspace(-8, 8, 4001)
    got = fc1_gelu(y.to(torch.bfloat16))
    assert got.dtype == torch.float32
    assert torch.allclose(got, F.gelu(y.to(torch.bfloat16).float(), approximate="tanh"))
    gap = float((got - F.gelu(y.to(torch.bfloat16).float())).abs().max())
    assert 1e-5 < gap < 5e-4  # the tanh form, not erf's; far below e4m3's step (2^-4 relative)


@pytest.mark.parametrize("cols,parts", [(10240, (8192, 2048)), (2560, (2048, 512)), (4096, (4096, 1)),
                                        (40, (32, 8)), (33, (32, 1)), (1, (1, 1)), (100, (64, 64))])
def test_a_row_is_two_power_of_two_blocks_that_cover_it(cols: int, parts: tuple[int, int]) -> None:
    from virnucpro.models.kernels.fp8_quantize import row_parts

    head, tail = row_parts(cols)
    assert (head, tail) == parts
    assert head <= cols <= head + tail


@gpu
@pytest.mark.parametrize("rows,dim", [(1, 2560), (4099, 2560), (2051, 10240), (33, 40)])
@pytest.mark.parametrize("gelu", [False, True])
def test_gpu_row_quantisation_kernel_matches_the_reference(rows: int, dim: int, gelu: bool) -> None:
    from virnucpro.models.kernels.fp8_quantize import (
        quantize_rows_fused,
        quantize_rows_reference,
        triton_quantize_available,
    )

    if not triton_quantize_available():
        pytest.skip("Triton kernel not available")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("e4m3 stores need compute capability 8.9")
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (3 * torch.randn(rows, dim, generator=g, device="cuda")).to(torch.bfloat16)
    kq, ks = quantize_rows_fused(x, gelu=gelu)
    rq, rs = quantize_rows_reference(x, gelu=gelu)
    assert kq.dtype == torch.float8_e4m3fn and ks.shape == (rows, 1)
    assert torch.allclose(ks, rs, rtol=1e-6, atol=0)
    # the same e4m3 value, or its neighbour where the fast exp/division's last bit moved a value across a tie
    assert float((kq.float() - rq.float()).abs().max()) <= 32
    assert float((kq.float() != rq.float()).float().mean()) < 0.001
