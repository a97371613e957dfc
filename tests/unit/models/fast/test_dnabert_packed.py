"""Packed DNABERT-S batches: the packed encoder computes the padded encoder's function. CPU tests
use the reference attention (one SDPA call per sequence); ``gpu`` tests run the Triton kernels
(the ALiBi kernel itself: ``tests/unit/models/kernels/test_alibi_varlen.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from virnucpro.config import Precision
from virnucpro.models.embedders import DnabertEmbedder, dnabert_fast_options, load_dnabert_embedder
from virnucpro.models.fast.dnabert import FastDnabert
from virnucpro.models.fast.packing import pack_rows, pool_packed
from virnucpro.models.kernels import geglu_gemm as geglu_module
from virnucpro.models.kernels.geglu_gemm import geglu_gemm_supported
from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert, load_dnabert
from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer

CPU = torch.device("cpu")
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DNA = ["ACGTTGCAGTACGATCGATCGGATTACA" * 3, "GATTACA", "TTTTTGGGGGCCCCCAAAAA" * 6, "ACGTN" * 11]


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_cuda(test))


def test_pack_rows_pool_ends_counts_every_token() -> None:
    batch = pack_rows([[5, 6, 7], [9]], CPU, pool_ends=True)
    assert batch.counts.tolist() == [3.0, 1.0]
    assert batch.gather.tolist() == [[0, 1, 2], [3, 4, 4]]  # 4 = the zero row
    hidden = torch.arange(8, dtype=torch.float32).view(4, 2)
    assert torch.equal(pool_packed(hidden, batch), torch.stack([hidden[:3].mean(0), hidden[3]]))
    with pytest.raises(ValueError, match="token to average"):
        pack_rows([[1], []], CPU, pool_ends=True)


def test_packed_forward_equals_padded_fp32(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    fast = FastDnabert(model)
    rows = tokenizer.encode_batch(DNA)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    keep = ids.ne(tokenizer.pad_id)
    expected = fast(ids, keep)
    batch = pack_rows(rows, CPU, pool_ends=True)
    got = fast.forward_packed(batch)
    for i, (lo, hi) in enumerate(zip(batch.cu_seqlens[:-1].tolist(), batch.cu_seqlens[1:].tolist())):
        assert float((got[lo:hi] - expected[i, : hi - lo]).abs().max()) < 1e-5


def test_packed_embedder_equals_padded_and_compiles(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    padded = DnabertEmbedder(model, tokenizer, fast=True, compile=False)
    assert not padded.packed  # the CPU default: padded (fp32 reference)
    packed = DnabertEmbedder(model, tokenizer, fast=True, compile=True, packed=True)
    for fn in packed.runner.compiled_functions:
        fn.backend = "aot_eager"
    assert torch.allclose(packed.embed(DNA), padded.embed(DNA), atol=1e-5)
    assert packed.packed and all(fn.failed is None for fn in packed.runner.compiled_functions)
    assert packed.runner.packed_geglu.calls == model.config.num_hidden_layers
    assert packed.runner.layer.calls == 0  # the padded layer never ran


def test_packed_bf16_options_agree_with_the_plain_module(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.bfloat16)
    reference = DnabertEmbedder(model, tokenizer, fast=False).embed(DNA)
    for precision in (Precision.BF16, Precision.FP16):
        options = dnabert_fast_options(precision)
        embedder = DnabertEmbedder(model, tokenizer, fast=True, compile=False, packed=True, **options)
        got = embedder.embed(DNA)
        assert embedder.packed and float(F.cosine_similarity(got, reference).min()) > 0.999, options
    with pytest.raises(ValueError, match="attention in the compute dtype"):
        DnabertEmbedder(model, tokenizer, fast=True, packed=True, attention_dtype=torch.float32)


def test_packed_failure_and_self_check_fall_back_to_padded(
    demo_dnabert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    embedder = DnabertEmbedder(model, tokenizer, fast=True, compile=False, packed=True)
    expected = embedder.embed(DNA)
    embedder.check_packed(DNA)
    assert embedder.packed and embedder.packing.check_cosine > 0.99999

    def broken(batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("triton: out of resources")

    monkeypatch.setattr(embedder.runner, "embed_packed", broken)
    with caplog.at_level(logging.WARNING):
        got = embedder.embed(DNA)
    assert not embedder.packed and "out of resources" in embedder.packing.failed
    assert torch.allclose(got, expected, atol=1e-5)
    bad = DnabertEmbedder(model, tokenizer, fast=True, compile=False, packed=True)
    real = bad.runner.embed_packed
    monkeypatch.setattr(bad.runner, "embed_packed", lambda batch: -real(batch))
    bad.check_packed(DNA)
    assert not bad.packed and "self-check cosine" in bad.packing.failed


# -- device machine ---------------------------------------------------------------------------
@gpu
def test_gpu_packed_dnabert_is_the_default_and_agrees() -> None:
    cuda = torch.device("cuda")
    config = DnabertConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=2,
                           intermediate_size=512)  # head size 64, as the real model
    model = build_random_dnabert(config, cuda, torch.bfloat16)
    tokenizer = DnaTokenizer.from_model_dir(Path("/nonexistent"))
    embedder = DnabertEmbedder(model, tokenizer, **dnabert_fast_options(Precision.BF16))
    assert embedder.packed  # the default on CUDA in bf16
    embedder.warmup(4096)
    assert embedder.packed and embedder.packing.check_cosine > 0.999, embedder.packing.failed
    seqs = DNA * 20
    reference = DnabertEmbedder(model, tokenizer, fast=False).embed(seqs)
    got = embedder.embed(seqs)
    assert float(F.cosine_similarity(got, reference).min()) > 0.999
    runner = embedder.runner
    assert all(fn.failed is None for fn in runner.compiled_functions)
    if geglu_gemm_supported(cuda):  # Hopper or newer: the gate runs in the gated GEMM's epilogue
        assert runner.gated_interleaved is not None and runner.packed_geglu.calls == 0
        assert geglu_module._KERNEL.failed is None, geglu_module._KERNEL.failed
    else:
        assert runner.gated_interleaved is None and runner.packed_geglu.calls > 0
    assert runner.layer.calls == 0
    fp32 = DnabertEmbedder(build_random_dnabert(config, cuda, torch.float32), tokenizer)
    assert not fp32.packed  # the GPU default precision stays on the padded fp32 path
