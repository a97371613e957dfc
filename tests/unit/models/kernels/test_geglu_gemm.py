"""DNABERT-S's gated GEMM with the GEGLU gate in its epilogue
(:mod:`virnucpro.models.kernels.geglu_gemm`).

CPU tests pin down the weight interleaving, the reference (the plain module's function) and the
fallback; ``gpu`` tests hold the Triton kernel to the reference, tails and fp16 included, and
check that the packed DNABERT-S forward uses it and agrees with the unfused path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from virnucpro.models.fast.dnabert import FastDnabert
from virnucpro.models.fast.packing import pack_rows
from virnucpro.models.kernels import geglu_gemm as module
from virnucpro.models.kernels.geglu_gemm import (
    geglu_gemm,
    geglu_gemm_supported,
    geglu_gemm_usable,
    geglu_reference,
    interleave_gate_up,
)
from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert, load_dnabert
from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer

CPU = torch.device("cpu")
DNA = ["ACGTTGCAGTACGATCGATCGGATTACA" * 3, "GATTACA", "TTTTTGGGGGCCCCCAAAAA" * 6, "ACGTN" * 11]
_needs_hopper = pytest.mark.skipif(
    not torch.cuda.is_available() or not geglu_gemm_supported(torch.device("cuda")),
    reason="needs a CUDA GPU with TMA (compute capability 9.0+) and Triton",
)


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_hopper(test))


def test_interleave_puts_each_gate_row_beside_its_up_row() -> None:
    inter, hidden = 3, 2
    weight = torch.arange(2 * inter * hidden, dtype=torch.float32).view(2 * inter, hidden)
    got = interleave_gate_up(weight)
    assert got.is_contiguous() and got.shape == weight.shape
    for c in range(inter):
        assert torch.equal(got[2 * c], weight[c]) and torch.equal(got[2 * c + 1], weight[inter + c])


def test_reference_is_the_modules_gated_feed_forward(demo_dnabert_dir: Path) -> None:
    model, _ = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    mlp = model.encoder.layer[0].mlp
    x = torch.randn(7, model.config.hidden_size)
    h = mlp.gated_layers(x)
    expected = F.gelu(h[:, : mlp.intermediate]) * h[:, mlp.intermediate :]
    assert torch.equal(geglu_reference(x, mlp.gated_layers.weight), expected)


def test_cpu_runs_the_reference() -> None:
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    weight = torch.randn(256, 64, dtype=torch.bfloat16)
    interleaved = interleave_gate_up(weight)
    assert not geglu_gemm_supported(CPU) and not geglu_gemm_usable(x, interleaved)
    assert torch.equal(geglu_gemm(x, interleaved, weight), geglu_reference(x, weight))


def test_fused_option_on_cpu(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.bfloat16)
    assert FastDnabert(model).gated_interleaved is None  # default: off where the kernel cannot run
    fused = FastDnabert(model, fused_geglu=True)
    layers = model.encoder.layer
    assert len(fused.gated_interleaved) == len(layers)
    assert torch.equal(fused.gated_interleaved[1], interleave_gate_up(layers[1].mlp.gated_layers.weight))
    batch = pack_rows(tokenizer.encode_batch(DNA), CPU, pool_ends=True)
    plain = FastDnabert(model, fused_geglu=False).forward_packed(batch)
    assert torch.equal(fused.forward_packed(batch), plain)  # the CPU falls back to the reference


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 255, 257, 4099])
def test_gpu_kernel_matches_reference(rows: int, dtype: torch.dtype) -> None:
    cuda = torch.device("cuda")
    generator = torch.Generator(device=cuda).manual_seed(rows)
    x = torch.randn(rows, 768, device=cuda, dtype=dtype, generator=generator)
    weight = torch.randn(2 * 3072, 768, device=cuda, dtype=dtype, generator=generator) / 768**0.5
    interleaved = interleave_gate_up(weight)
    assert geglu_gemm_usable(x, interleaved)
    got = geglu_gemm(x, interleaved, weight)
    assert module._KERNEL.failed is None, module._KERNEL.failed
    expected = geglu_reference(x.float(), weight.float())  # fp32: both are within rounding of it
    assert got.shape == (rows, 3072) and got.dtype == dtype
    cos = F.cosine_similarity(got.float(), expected, dim=1)
    assert float(cos.min()) > 0.9999
    scale = float(expected.abs().max())
    assert float((got.float() - expected).abs().max()) < 0.02 * scale


@gpu
def test_gpu_packed_forward_uses_the_kernel_and_agrees() -> None:
    cuda = torch.device("cuda")
    config = DnabertConfig(num_hidden_layers=2)  # DNABERT-S's widths: H 768, I 3,072
    model = build_random_dnabert(config, cuda, torch.bfloat16)
    tokenizer = DnaTokenizer.from_model_dir(Path("/nonexistent"))
    batch = pack_rows(tokenizer.encode_batch(DNA * 50), cuda, pool_ends=True)
    fused = FastDnabert(model, residual_dtype=torch.bfloat16)
    assert fused.gated_interleaved is not None  # the default where the kernel runs
    plain = FastDnabert(model, residual_dtype=torch.bfloat16, fused_geglu=False)
    got, expected = fused.embed_packed(batch), plain.embed_packed(batch)
    assert module._KERNEL.failed is None, module._KERNEL.failed
    assert float(F.cosine_similarity(got.double(), expected.double()).min()) > 0.9999


def test_embedder_builds_interleaved_weights_only_for_packed_batches(demo_dnabert_dir: Path) -> None:
    from virnucpro.models.embedders import DnabertEmbedder

    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.bfloat16)
    packed = DnabertEmbedder(model, tokenizer, fast=True, compile=False, packed=True, fused_geglu=True)
    assert packed.runner.gated_interleaved is not None
    padded = DnabertEmbedder(model, tokenizer, fast=True, compile=False, packed=False, fused_geglu=True)
    assert padded.runner.gated_interleaved is None  # the padded path never uses them: no copy kept
    assert torch.allclose(packed.embed(DNA), padded.embed(DNA), atol=2e-2)
