"""GPTQ's rounding of a weight to e4m3 (:mod:`virnucpro.models.fast.fp8_rounding`): the values
stay on nearest rounding's e4m3 grid and scales, the block step is the column rule, and the
output error on inputs like the calibration ones falls against nearest rounding. The Triton
block kernel against its reference is a ``gpu`` test (run on the device machine)."""

from __future__ import annotations

import pytest
import torch

from virnucpro.models.fast.fp8_rounding import (
    BLOCK,
    compensated_rounding,
    round_block,
    round_block_reference,
)
from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, row_scale


def _nearest(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = row_scale(weight)
    return (weight.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def _inputs(rows: int, width: int, seed: int, mean: torch.Tensor) -> torch.Tensor:
    """Correlated inputs (a 24-dimensional subspace) around ``mean``: transformer-like."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(width, 24, generator=torch.Generator().manual_seed(99))
    return torch.randn(rows, 24, generator=g) @ basis.T + mean


def _output_error(weight: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (weight - q.float() * scale).T).pow(2).mean())


def test_block_step_with_no_coupling_is_nearest_rounding() -> None:
    torch.manual_seed(0)
    w = torch.randn(40, BLOCK) * torch.logspace(-2, 1, 40)[:, None]
    q, scale = _nearest(w)
    got, err = round_block_reference(w, torch.eye(BLOCK), scale)
    assert torch.equal(got.float(), q.float())  # an identity factor moves no error
    assert torch.allclose(err, w - q.float() * scale)


def test_block_step_moves_each_error_onto_the_later_columns_only() -> None:
    torch.manual_seed(1)
    w = torch.randn(8, 4)
    scale = row_scale(w)
    u = torch.triu(torch.rand(4, 4)) + torch.eye(4)
    q, err = round_block_reference(w, u, scale)
    # by hand: column 0 is rounded as it is; column 1 after column 0's error moved along u[0]
    assert torch.equal(q[:, 0].float(), _nearest(w)[0][:, 0].float())
    moved = w[:, 1] - err[:, 0] * u[0, 1]
    assert torch.equal(q[:, 1].float(), (moved / scale[:, 0]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).float())
    assert torch.allclose(err[:, 0], (w[:, 0] - q[:, 0].float() * scale[:, 0]) / u[0, 0])


def test_values_keep_nearest_roundings_scales_and_grid() -> None:
    torch.manual_seed(2)
    weight = torch.randn(48, 300) * 0.05
    x = _inputs(1500, 300, seed=3, mean=torch.randn(300))
    q, scale = compensated_rounding(weight, x.T @ x)
    _, nearest_scale = _nearest(weight)
    assert q.dtype == E4M3 and q.shape == weight.shape
    assert torch.equal(scale, nearest_scale)  # scales from the original rows: the GEMM is unchanged
    assert bool(torch.isfinite(q.float()).all()) and float(q.float().abs().max()) <= E4M3_MAX
    back = q.float() * scale
    assert float((back - weight).abs().max()) < 0.25 * float(weight.abs().max())  # near the weight


def test_output_error_falls_on_calibration_and_on_new_inputs_alike() -> None:
    torch.manual_seed(4)
    width = 2 * BLOCK + 40  # a partial last block
    weight = torch.randn(64, width) * 0.05
    mean = 2.0 * torch.randn(width)
    calibration = _inputs(2000, width, seed=5, mean=mean)
    held_out = _inputs(800, width, seed=6, mean=mean)
    q, scale = compensated_rounding(weight, calibration.T @ calibration)
    nq, nscale = _nearest(weight)
    assert _output_error(weight, q, scale, calibration) < 0.2 * _output_error(weight, nq, nscale, calibration)
    assert _output_error(weight, q, scale, held_out) < 0.5 * _output_error(weight, nq, nscale, held_out)


def test_inputs_that_are_always_zero_do_not_break_the_factorisation() -> None:
    torch.manual_seed(7)
    weight = torch.randn(16, 64)
    x = torch.randn(200, 64)
    x[:, 10:20] = 0.0  # dead inputs: a zero row and column in the Gram matrix
    q, _ = compensated_rounding(weight, x.T @ x)
    assert bool(torch.isfinite(q.float()).all())
    q0, _ = compensated_rounding(weight, torch.zeros(64, 64))  # nothing observed: no coupling
    assert torch.equal(q0.float(), _nearest(weight)[0].float())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_block_step_matches_its_reference() -> None:
    from virnucpro.models.fast import fp8_rounding

    if not fp8_rounding._KERNEL.available():
        pytest.skip("Triton is not importable here")
    torch.manual_seed(8)
    dev = torch.device("cuda")
    for rows, width in ((2560, BLOCK), (100, 72)):
        w = (torch.randn(rows, width) * 0.05).to(dev)
        scale = row_scale(w)
        a = torch.randn(width, width, dtype=torch.float64)
        u = torch.linalg.cholesky(torch.linalg.inv(a @ a.T + width * torch.eye(width, dtype=torch.float64)),
                                  upper=True).float().to(dev)
        q, err = round_block(w, u, scale)
        q_ref, err_ref = round_block_reference(w, u, scale)
        assert fp8_rounding._KERNEL.failed is None
        same = float((q.float() == q_ref.float()).float().mean())
        assert same > 0.999, same  # fused multiply-adds may tip a rare tie
        assert float((err - err_ref).abs().max()) < 1e-3 * float(err_ref.abs().max())
    weight = (torch.randn(512, 1024) * 0.05).to(dev)
    x = _inputs(3000, 1024, seed=9, mean=torch.randn(1024)).to(dev)
    q_gpu, _ = compensated_rounding(weight, x.T @ x)
    q_cpu, _ = compensated_rounding(weight.cpu(), (x.T @ x).cpu())
    assert float((q_gpu.float().cpu() == q_cpu.float()).float().mean()) > 0.99


def test_gram_sums_outer_products_in_fp32() -> None:
    from virnucpro.models.fast.fp8_rounding import gram

    torch.manual_seed(10)
    x = torch.randn(300, 48).bfloat16()
    want = x.double().T @ x.double()
    got = gram(x)
    assert got.dtype == torch.float32 and got.shape == (48, 48)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-3)
    if torch.cuda.is_available():  # the tensor cores' fp32 sums
        assert torch.allclose(gram(x.cuda()).double().cpu(), want, rtol=1e-4, atol=1e-2)
