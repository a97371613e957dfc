"""FP8 (e4m3) linear layers for ESM-2: the quantisation rule, the GEMM against fp32, the packed
ESM-2 forward in FP8 against fp32 (on the CPU: ``torch._scaled_mm`` has a CPU implementation),
and the errors on devices without FP8. ``gpu`` tests run on the device machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from virnucpro.config import Precision
from virnucpro.errors import ModelLoadError
from virnucpro.models.embedders import Esm2Embedder, esm_fast_options, load_esm2_embedder
from virnucpro.models.fast.esm2 import FastEsm2
from virnucpro.models.fast.fp8 import (
    E4M3_MAX,
    fp8_device_problem,
    fp8_linear,
    gelu_quantize_rows,
    quantize_rows,
    quantize_weight,
)
from virnucpro.models.reference.esm2 import Esm2Spec, load_esm2

CPU = torch.device("cpu")
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MLVKAYIAKQRQWFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWY" * 3, "MKW"]
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_cuda(test))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(1), b.double().flatten(1)).min())


def test_weights_are_scaled_per_output_channel_to_the_e4m3_range() -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 64) * torch.logspace(-3, 2, 48)[:, None]  # rows of very different sizes
    q = quantize_weight(weight, torch.zeros(48))
    assert q.q_t.dtype == torch.float8_e4m3fn and q.q_t.shape == (64, 48) and q.scale.shape == (1, 48)
    assert not q.q_t.is_contiguous() and q.q_t.t().is_contiguous()  # column-major for _scaled_mm
    row_max = q.q_t.float().abs().amax(dim=0)
    assert torch.allclose(row_max, torch.full((48,), E4M3_MAX))  # every row uses the full range
    back = q.q_t.float().t() * q.scale.t()
    rel = (back - weight).abs() / weight.abs().amax(dim=1, keepdim=True)
    assert float(rel.max()) < 2**-4  # e4m3: 3 mantissa bits
    assert q.bias is not None and q.bias.dtype == torch.bfloat16


def test_a_zero_row_quantises_to_zeros_without_nan() -> None:
    x = torch.zeros(3, 16)
    x[1] = torch.linspace(-1, 1, 16)
    q, scale = quantize_rows(x)
    assert torch.isfinite(scale).all() and bool((q[0].float() == 0).all()) and bool((q[2].float() == 0).all())


def test_fp8_linear_agrees_with_fp32() -> None:
    torch.manual_seed(1)
    x, weight, bias = torch.randn(40, 128), torch.randn(96, 128) / 128**0.5, 0.1 * torch.randn(96)
    got = fp8_linear(*quantize_rows(x), quantize_weight(weight, bias))
    want = F.linear(x, weight, bias)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert _cosine(got.float(), want) > 0.998
    assert float((got.float() - want).abs().max()) < 0.1 * float(want.abs().max())


def test_gelu_then_quantise_is_fc1s_tanh_gelu_quantised() -> None:
    y = torch.linspace(-4, 4, 64).repeat(2, 1)
    q, scale = gelu_quantize_rows(y)
    want_q, want_scale = quantize_rows(F.gelu(y, approximate="tanh"))
    assert torch.equal(q.float(), want_q.float()) and torch.equal(scale, want_scale)
    assert _cosine(q.float() * scale, F.gelu(y)) > 0.999


@pytest.fixture(scope="module")
def esm_bf16(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 4-layer ESM-2 of the 3B model's head size (64), bf16 and fp32 copies of the same weights."""
    from virnucpro.models.demo import write_esm2_checkpoint

    spec = Esm2Spec("esm2_t4_head64", num_layers=4, embed_dim=256, attention_heads=4)
    path = write_esm2_checkpoint(tmp_path_factory.mktemp("esm") / "esm2_t4_head64.pt", spec, seed=3)
    return path, load_esm2(path, CPU, torch.bfloat16), load_esm2(path, CPU, torch.float32)


def test_packed_esm_in_fp8_agrees_with_fp32(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    _, bf16, fp32 = esm_bf16
    reference = Esm2Embedder(fp32, fast=False).embed(PROTEINS)
    embedder = Esm2Embedder(bf16, fast=True, compile=False, packed=True, **esm_fast_options(Precision.FP8))
    assert embedder.packed and embedder.runner.fp8 and len(embedder.runner.fp8_weights) == 4
    got = embedder.embed(PROTEINS)
    bf16_only = Esm2Embedder(bf16, fast=True, compile=False, packed=True, residual_dtype=torch.bfloat16).embed(PROTEINS)
    assert _cosine(got, reference) > 0.99  # random tiny weights; the 3B's figure is the benchmark's
    assert _cosine(got, bf16_only) > 0.99
    assert not torch.equal(got, bf16_only)  # the GEMMs did run in FP8


def test_fp8_fast_accumulation_reaches_every_gemm_call(esm_bf16, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.models.fast import fp8

    _, bf16, _ = esm_bf16
    seen: list[bool] = []
    real = torch._scaled_mm

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["use_fast_accum"])
        return real(*args, **kwargs)  # the real GEMM: only the setting is recorded

    options = esm_fast_options(Precision.FP8)
    assert options["fp8_fast_accum"] is fp8.FAST_ACCUM  # what --precision fp8 runs
    for accum in (True, False):
        embedder = Esm2Embedder(bf16, fast=True, compile=False, packed=True, **{**options, "fp8_fast_accum": accum})
        monkeypatch.setattr(torch, "_scaled_mm", recording)
        seen.clear()
        embedder.embed(PROTEINS)
        monkeypatch.setattr(torch, "_scaled_mm", real)
        assert len(seen) == 4 * 4 and set(seen) == {accum}  # four GEMMs in each of the four layers


def test_fp8_needs_bf16_weights_and_the_fast_path(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    _, _, fp32 = esm_bf16
    with pytest.raises(ValueError, match="load the weights in bf16"):
        FastEsm2(fp32, fp8=True)
    with pytest.raises(ValueError, match="fast path only"):
        Esm2Embedder(fp32, fast=False, fp8=True)


def test_fp8_never_falls_back_to_padded_bf16_silently(esm_bf16, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, bf16, _ = esm_bf16
    with pytest.raises(ModelLoadError, match="fp8 runs on packed batches only"):
        Esm2Embedder(bf16, fast=True, compile=False, packed=False, fp8=True)
    embedder = Esm2Embedder(bf16, fast=True, compile=False, packed=True, fp8=True)
    real = embedder.runner.embed_packed
    monkeypatch.setattr(embedder.runner, "embed_packed", lambda batch: -real(batch))
    with pytest.raises(ModelLoadError, match="self-check cosine"):
        embedder.check_packed(PROTEINS)


def test_fp8_on_the_cpu_is_refused_before_the_checkpoint_is_read(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    path = esm_bf16[0]
    problem = fp8_device_problem("cpu")
    assert problem is not None and "compute capability 8.9" in problem and "--precision auto" in problem
    with pytest.raises(ModelLoadError, match="needs an NVIDIA GPU with FP8 tensor cores"):
        load_esm2_embedder(path, CPU, Precision.FP8)


# -- device machine ---------------------------------------------------------------------------
@gpu
def test_gpu_fp8_gemm_agrees_with_fp32_at_esm_3b_shapes() -> None:
    cuda = torch.device("cuda")
    if fp8_device_problem(cuda):
        pytest.skip(fp8_device_problem(cuda))
    torch.manual_seed(0)
    for n_out, n_in in ((7680, 2560), (2560, 2560), (10240, 2560), (2560, 10240)):
        x = torch.randn(4096, n_in, device=cuda, dtype=torch.bfloat16)
        weight = torch.randn(n_out, n_in, device=cuda, dtype=torch.bfloat16) / n_in**0.5
        bias = 0.1 * torch.randn(n_out, device=cuda, dtype=torch.bfloat16)
        want = F.linear(x.float(), weight.float(), bias.float())
        q, w = quantize_rows(x), quantize_weight(weight, bias)
        got = fp8_linear(*q, w)
        fast = fp8_linear(*q, w, fast_accum=True)
        assert _cosine(got.float(), want) > 0.998, (n_out, n_in)
        assert _cosine(fast.float(), want) > 0.998, (n_out, n_in)
        # Hopper's fast accumulation changes the sums, a little (K = 2,560 or 10,240)
        assert _cosine(fast.float(), got.float()) > 0.9999 and not torch.equal(fast, got), (n_out, n_in)


@gpu
def test_gpu_fp8_esm_agrees_and_compiles(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    cuda = torch.device("cuda")
    if fp8_device_problem(cuda):
        pytest.skip(fp8_device_problem(cuda))
    path = esm_bf16[0]
    reference = Esm2Embedder(load_esm2(path, cuda, torch.float32), fast=False).embed(PROTEINS * 3)
    embedder = load_esm2_embedder(path, cuda, Precision.FP8)
    embedder.warmup(2048)
    assert embedder.packed and embedder.runner.fp8, embedder.packing.failed
    got = embedder.embed(PROTEINS * 3)
    assert _cosine(got, reference) > 0.99
    assert all(f.failed is None for f in embedder.runner.compiled_functions)


def test_the_bias_absorbs_the_weights_rounding_at_the_mean_input() -> None:
    torch.manual_seed(4)
    weight, bias = torch.randn(96, 256) / 16, 0.1 * torch.randn(96)
    mean = 0.5 + torch.randn(256)  # a common component every token shares, as in a real model
    tokens = mean + 0.3 * torch.randn(512, 256)
    exact = F.linear(tokens, weight, bias).mean(dim=0)
    plain = fp8_linear(*quantize_rows(tokens), quantize_weight(weight, bias)).float().mean(dim=0)
    corrected = fp8_linear(*quantize_rows(tokens), quantize_weight(weight, bias, input_mean=mean)).float().mean(dim=0)
    assert float((corrected - exact).norm()) < 0.25 * float((plain - exact).norm())
    shift = quantize_weight(weight, None, input_mean=mean).bias  # no bias: the correction alone
    assert shift is not None and float(shift.float().abs().max()) > 0


def test_calibration_proteins_are_real_frames_of_the_packaged_file() -> None:
    from virnucpro.models.fast.fp8 import calibration_proteins

    proteins = calibration_proteins()
    assert len(proteins) == 64 and len(set(proteins)) == 64
    assert all(len(p) >= 100 and set(p) <= set("ACDEFGHIKLMNPQRSTVWY") for p in proteins)


def test_gemm_input_means_are_the_plain_modules_inputs(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    _, bf16, _ = esm_bf16
    runner = FastEsm2(bf16, residual_dtype=torch.bfloat16)
    proteins = PROTEINS[:3]
    means = runner.gemm_input_means(proteins)
    seen: dict[tuple[int, int], list[torch.Tensor]] = {}
    hooks = []
    for i, layer in enumerate(bf16.layers):
        for gemm, module in enumerate((layer.self_attn.q_proj, layer.self_attn.out_proj, layer.fc1, layer.fc2)):
            hooks.append(module.register_forward_hook(
                lambda _m, inputs, _o, key=(i, gemm): seen.setdefault(key, []).append(inputs[0].float())))
    try:
        with torch.no_grad():
            for protein in proteins:  # one at a time: no padding among the tokens averaged
                bf16(torch.tensor([bf16.alphabet.encode(protein)]))
    finally:
        for hook in hooks:
            hook.remove()
    for (i, gemm), inputs in seen.items():
        want = torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs]).mean(dim=0)
        assert means[i][gemm].shape == want.shape
        assert _cosine(means[i][gemm][None], want[None]) > 0.999, (i, gemm)


def test_bias_correction_brings_fp8_esm_closer_to_fp32(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    _, bf16, fp32 = esm_bf16
    proteins = ["".join("ACDEFGHIKLMNPQRSTVWY"[(i * 7 + j * 3) % 20] for j in range(60 + 9 * i)) for i in range(8)]
    reference = Esm2Embedder(fp32, fast=False).embed(proteins)
    embedder = Esm2Embedder(bf16, fast=True, compile=False, packed=True, **esm_fast_options(Precision.FP8))
    corrected = embedder.embed(proteins)
    runner = embedder.runner
    runner.fp8_weights = [tuple(quantize_weight(args[i], args[i + 1]) for i in (2, 4, 8, 10))
                          for args in runner.layer_args]  # the same model without the correction
    plain = embedder.embed(proteins)
    gap = lambda got: float((1 - F.cosine_similarity(got.double(), reference.double())).mean())  # noqa: E731
    assert gap(corrected) < 0.5 * gap(plain), (gap(corrected), gap(plain))


def test_compensated_rounding_brings_fp8_esm_closer_to_fp32_on_new_proteins(esm_bf16) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.models.fast.fp8 import ROUNDING, Fp8Rounding

    _, bf16, fp32 = esm_bf16
    g = torch.Generator().manual_seed(1)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    proteins = ["".join(letters[int(i)] for i in torch.randint(0, 20, (int(n),), generator=g))
                for n in torch.randint(80, 200, (12,), generator=g)]  # not the calibration proteins
    reference = Esm2Embedder(fp32, fast=False).embed(proteins)
    options = esm_fast_options(Precision.FP8)
    assert options["fp8_rounding"] is ROUNDING is Fp8Rounding.COMPENSATED  # what --precision fp8 runs
    gaps = {}
    for rounding in Fp8Rounding:
        embedder = Esm2Embedder(bf16, fast=True, compile=False, packed=True, **{**options, "fp8_rounding": rounding})
        assert embedder.runner is not None and embedder.runner.fp8_rounding is rounding
        got = embedder.embed(proteins)
        gaps[rounding] = float((1 - F.cosine_similarity(got.double(), reference.double())).mean())
    assert gaps[Fp8Rounding.COMPENSATED] < 0.7 * gaps[Fp8Rounding.NEAREST], gaps
