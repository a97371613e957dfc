"""q scaling + rotary: the reference against the compiled path's function on the CPU; the Triton
kernel against the reference on the device machine; a default GPU worker's models warm up with no
compiler imported (the point of the kernel: seconds of every worker's start)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from virnucpro.models.fast.esm2 import esm_rotary_qk
from virnucpro.models.kernels.rotary import rotary_qk, rotary_qk_reference, triton_rotary_available

gpu = pytest.mark.gpu


def _inputs(rows: int, heads: int, head_dim: int, dtype: torch.dtype, device: str = "cpu"):  # type: ignore[no-untyped-def]
    g = torch.Generator(device="cpu").manual_seed(rows * 7 + heads)
    qkv = torch.randn(rows, 3, heads, head_dim, generator=g)
    angles = torch.rand(rows, 1, head_dim // 2, generator=g) * 1000  # positions up to ~1000
    table = torch.cat([angles, angles], dim=-1)
    return (qkv.to(dtype).to(device), table.cos().to(dtype).to(device), table.sin().to(dtype).to(device))


def test_reference_is_the_compiled_paths_function_in_fp32() -> None:
    qkv, cos, sin = _inputs(9, 4, 16, torch.float32)
    q, k = rotary_qk_reference(qkv, cos, sin, 0.125)
    want_q, want_k = esm_rotary_qk(qkv, cos, sin, 0.125)
    torch.testing.assert_close(q, want_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k, want_k, rtol=1e-6, atol=1e-6)
    assert q.is_contiguous() and k.is_contiguous() and q.shape == (9, 4, 16)
    assert not torch.equal(q, qkv[:, 0] * 0.125)  # the rotation changed something


def test_reference_rounds_once_in_16_bits() -> None:
    qkv, cos, sin = _inputs(33, 4, 16, torch.bfloat16)
    q, k = rotary_qk_reference(qkv, cos, sin, 0.125)
    exact_q, exact_k = esm_rotary_qk(qkv.float(), cos.float(), sin.float(), 0.125)
    assert q.dtype == torch.bfloat16
    assert torch.equal(q, exact_q.to(torch.bfloat16)) and torch.equal(k, exact_k.to(torch.bfloat16))


def test_cpu_tensors_take_the_reference() -> None:
    qkv, cos, sin = _inputs(5, 2, 8, torch.float32)
    got, want = rotary_qk(qkv, cos, sin, 0.5), rotary_qk_reference(qkv, cos, sin, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 257, 4099])
def test_gpu_kernel_matches_the_reference(rows: int, dtype: torch.dtype) -> None:
    assert triton_rotary_available()
    qkv, cos, sin = _inputs(rows, 40, 64, dtype, "cuda")  # ESM-2 3B: 40 heads of 64
    q, k = rotary_qk(qkv, cos, sin, 0.125)
    want_q, want_k = rotary_qk_reference(qkv, cos, sin, 0.125)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(q, want_q, rtol=eps, atol=eps)
    torch.testing.assert_close(k, want_k, rtol=eps, atol=eps)
    assert q.is_contiguous() and k.shape == (rows, 40, 64)


_NO_COMPILER = textwrap.dedent("""
    import sys, torch
    from virnucpro.config import Precision
    from virnucpro.models.embedders import DnabertEmbedder, Esm2Embedder, dnabert_fast_options, esm_fast_options
    from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert
    from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer
    from virnucpro.models.reference.esm2 import Esm2Spec, build_random_esm2
    from pathlib import Path
    cuda = torch.device("cuda")
    esm = build_random_esm2(Esm2Spec("esm2_t2_head64", num_layers=2, embed_dim=256, attention_heads=4),
                            cuda, torch.float16)
    dna = build_random_dnabert(DnabertConfig(hidden_size=128, num_attention_heads=2, num_hidden_layers=2,
                                             intermediate_size=256), cuda, torch.float16)
    embedders = [Esm2Embedder(esm, **esm_fast_options(Precision.FP16)),
                 DnabertEmbedder(dna, DnaTokenizer.from_model_dir(Path("/nonexistent")),
                                 **dnabert_fast_options(Precision.FP16))]
    for embedder in embedders:
        assert embedder.packed and embedder.runner.layer.enabled  # compiling is on, packed batches
        embedder.warmup(4096)
        assert embedder.packed, embedder.packing.failed
    print(sorted(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules))
""")


@gpu
def test_gpu_default_models_warm_up_without_importing_the_compiler() -> None:
    out = subprocess.run([sys.executable, "-c", _NO_COMPILER], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
