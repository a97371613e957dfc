"""The GPU fast path computes the plain modules' function (fp32 exactly enough; bf16 closely).

CPU tests run the fast path eagerly and through ``torch.compile`` with the ``aot_eager`` backend
(dynamo tracing, dynamic shapes, guards: everything but code generation). ``gpu`` tests run on
the device machine: inductor, fp32 against the original tool's golden outputs, bf16 agreement.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.config import Precision
from virnucpro.models.embedders import (
    DnabertEmbedder,
    Esm2Embedder,
    dnabert_fast_options,
    load_dnabert_embedder,
    load_esm2_embedder,
)
from virnucpro.models.fast.compiled import COMPILE_ENV, CompiledFunction, compile_default
from virnucpro.models.fast.dnabert import FastDnabert
from virnucpro.models.fast.esm2 import FastEsm2
from virnucpro.models.reference.dnabert import load_dnabert
from virnucpro.models.reference.esm2 import Esm2Spec, load_esm2

CPU = torch.device("cpu")
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu(test):  # type: ignore[no-untyped-def]
    """``@pytest.mark.gpu`` (select with ``-m gpu``), skipped without CUDA."""
    return pytest.mark.gpu(_needs_cuda(test))
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MLVKAYIAKQRQWFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWY" * 3, "MKW"]
DNA = ["ACGTACGGTTAC" * 20, "GATTACA" * 9, "TTTTGGGGCCCCAAAA" * 9, "ACGTTGCA" * 30]


@pytest.fixture(scope="module")
def multi_head_esm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from virnucpro.models.demo import write_esm2_checkpoint

    spec = Esm2Spec("esm2_t3_tiny", num_layers=3, embed_dim=40, attention_heads=5)
    return write_esm2_checkpoint(tmp_path_factory.mktemp("esm") / "esm2_t3_tiny.pt", spec, seed=7)


def _tokens(model, proteins: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    rows = [model.alphabet.encode(p) for p in proteins]
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), model.alphabet.padding_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("which", ["demo", "multi_head"])
def test_fast_esm_equals_plain_fp32(which: str, demo_esm_checkpoint: Path, multi_head_esm: Path) -> None:
    path = demo_esm_checkpoint if which == "demo" else multi_head_esm
    model = load_esm2(path, CPU, torch.float32)
    tokens = _tokens(model, PROTEINS)
    tokens[0, 5] = model.alphabet.mask_idx  # token-dropout rescaling path
    with torch.inference_mode():
        expected = model(tokens)
    fast = FastEsm2(model)
    got = fast(tokens, uniform=False)
    keep = tokens.ne(model.alphabet.padding_idx)
    assert float((got - expected).abs()[keep].max()) < 1e-5
    # equal lengths: no mask at all
    same = _tokens(model, PROTEINS[:2])
    assert same.ne(model.alphabet.padding_idx).all()
    with torch.inference_mode():
        expected_same = model(same)
    assert float((fast(same, uniform=True) - expected_same).abs().max()) < 1e-5


def test_fused_qkv_is_shared_not_copied(demo_esm_checkpoint: Path) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    tokens = _tokens(model, PROTEINS)
    with torch.inference_mode():
        before = model(tokens)
    first = FastEsm2(model)
    attn = model.layers[0].self_attn
    fused = first.layer_args[0][2]
    assert attn.q_proj.weight.data_ptr() == fused.data_ptr()
    assert attn.v_proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    second = FastEsm2(model)  # reuses the fused tensors
    assert second.layer_args[0][2].data_ptr() == fused.data_ptr()
    with torch.inference_mode():
        after = model(tokens)  # the plain module still computes the same function
    assert torch.equal(before, after)


def test_fast_esm_bf16_close_to_plain_bf16(demo_esm_checkpoint: Path) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.bfloat16)
    tokens = _tokens(model, PROTEINS)
    with torch.inference_mode():
        expected = model(tokens)
    keep = tokens.ne(model.alphabet.padding_idx)
    for residual in (torch.float32, torch.bfloat16):
        got = FastEsm2(model, residual_dtype=residual)(tokens, uniform=False)
        cos = torch.nn.functional.cosine_similarity(got[keep], expected[keep], dim=-1)
        assert float(cos.min()) > 0.999


def test_compiled_esm_equals_eager_and_batch_of_one_runs_eager(demo_esm_checkpoint: Path) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    eager = Esm2Embedder(model, fast=True, compile=False)
    compiled = Esm2Embedder(model, fast=True, compile=True)
    compiled.runner.layer.backend = "aot_eager"
    a, b = eager.embed(PROTEINS), compiled.embed(PROTEINS)
    assert torch.allclose(a, b, atol=1e-6)
    layer = compiled.runner.layer
    assert layer.failed is None and layer.calls == 36 and layer.eager_calls == 0
    c = compiled.embed(PROTEINS[:1])  # B = 1: eager, no specialised graph
    assert layer.eager_calls == 36
    assert torch.allclose(c[0], a[0], atol=1e-5)
    d = compiled.embed(PROTEINS[:2] * 3)  # a new batch size and length reuse the dynamic graph
    assert torch.allclose(d[0], a[0], atol=1e-5) and layer.failed is None


def test_compile_failure_falls_back_to_eager(demo_esm_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    embedder = Esm2Embedder(model, fast=True, compile=True)
    embedder.runner.layer.backend = "no-such-backend"
    expected = Esm2Embedder(model, fast=False).embed(PROTEINS)
    with caplog.at_level(logging.WARNING):
        got = embedder.embed(PROTEINS)
    assert embedder.runner.layer.failed is not None
    assert "using the eager version" in caplog.text
    assert torch.allclose(got, expected, atol=1e-5)


def test_compiled_function_marks_dims_and_counts() -> None:
    def f(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x * 2 if y is None else x + y

    fn = CompiledFunction(f, enabled=True, backend="aot_eager", dynamic_dims={0: (0,), 1: (0,)})
    assert torch.equal(fn(torch.ones(3, 2), None), torch.full((3, 2), 2.0))
    assert torch.equal(fn(torch.ones(5, 2), torch.ones(5, 2)), torch.full((5, 2), 2.0))
    fn(torch.ones(1, 2), None)
    assert fn.calls == 3 and fn.eager_calls == 1
    off = CompiledFunction(f, enabled=False)
    assert torch.equal(off(torch.ones(2), None), torch.full((2,), 2.0))


def test_compile_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert not compile_default(CPU, torch.bfloat16)
    assert compile_default(torch.device("cuda"), torch.bfloat16)
    assert not compile_default(torch.device("cuda"), torch.float32)
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not compile_default(torch.device("cuda"), torch.bfloat16)
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert compile_default(CPU, torch.float32)


def test_fast_dnabert_equals_plain(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    plain = DnabertEmbedder(model, tokenizer, fast=False)
    fast = DnabertEmbedder(model, tokenizer, fast=True, compile=False)
    assert isinstance(fast.runner, FastDnabert) and plain.runner is None
    assert float((plain.embed(DNA) - fast.embed(DNA)).abs().max()) < 1e-5
    compiled = DnabertEmbedder(model, tokenizer, fast=True, compile=True)
    compiled.runner.layer.backend = "aot_eager"
    assert float((plain.embed(DNA) - compiled.embed(DNA)).abs().max()) < 1e-5
    assert compiled.runner.layer.failed is None


def test_fast_dnabert_bf16_attention_agrees(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.bfloat16)
    plain = DnabertEmbedder(model, tokenizer, fast=False).embed(DNA)  # fp32 attention
    fast = DnabertEmbedder(model, tokenizer, fast=True, compile=False)
    assert fast.runner.attention_dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(plain, fast.embed(DNA))
    assert float(cos.min()) > 0.999


def test_fast_dnabert_bf16_residual_option(demo_dnabert_dir: Path) -> None:
    assert dnabert_fast_options(Precision.BF16) == {"residual_dtype": torch.bfloat16}
    assert dnabert_fast_options(Precision.FP32) == dnabert_fast_options(Precision.FP16) == {}
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.bfloat16)
    plain = DnabertEmbedder(model, tokenizer, fast=False).embed(DNA)  # fp32 residual stream
    fast = DnabertEmbedder(model, tokenizer, fast=True, compile=False, residual_dtype=torch.bfloat16)
    assert fast.runner.residual_dtype == torch.bfloat16
    hidden = fast.runner(*_dnabert_batch(fast, DNA))
    assert hidden.dtype == torch.bfloat16  # the residual stream really is bf16
    got = fast.embed(DNA)
    assert got.dtype == torch.float32  # pooled and returned in fp32
    cos = torch.nn.functional.cosine_similarity(plain, got)
    assert float(cos.min()) > 0.999
    assert not torch.equal(plain, got)


def _dnabert_batch(embedder: DnabertEmbedder, dna: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = embedder.encode(dna)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), embedder.tokenizer.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    keep = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    return ids, keep


def test_submit_is_asynchronous_api_and_empty_batches(demo_esm_checkpoint: Path, demo_dnabert_dir: Path) -> None:
    esm = load_esm2_embedder(demo_esm_checkpoint, CPU)
    rows = esm.encode(PROTEINS)
    handles = [esm.submit(rows[:2]), esm.submit(rows[2:])]
    got = torch.cat([h.result() for h in handles])
    assert torch.allclose(got, esm.embed(PROTEINS), atol=1e-6)
    assert esm.submit([]).result().shape == (0, esm.dim)
    dna = load_dnabert_embedder(demo_dnabert_dir, CPU)
    assert dna.submit([]).result().shape == (0, dna.dim)
    assert dna.encode([]) == []
    with pytest.raises(ValueError, match="empty protein"):
        esm.encode(["MK", ""])


def test_fast_path_reproduces_golden_on_cpu(golden_tiny_dir: Path) -> None:
    ref = np.load(golden_tiny_dir / "ref_500_embeddings.npz")
    esm = Esm2Embedder(load_esm2(golden_tiny_dir / "esm2_t36_tiny.pt", CPU, torch.float32), fast=True)
    model, tokenizer = load_dnabert(golden_tiny_dir / "dnabert_s_tiny", CPU, torch.float32)
    dnabert = DnabertEmbedder(model, tokenizer, fast=True)
    proteins = [str(s) for s in ref["esm_seqs"]]
    dna = [str(s) for s in ref["dnabert_seqs"]]
    e = torch.cat([esm.embed(proteins[i : i + 64]) for i in range(0, len(proteins), 64)]).numpy()
    d = torch.cat([dnabert.embed(dna[i : i + 64]) for i in range(0, len(dna), 64)]).numpy()
    assert float(np.abs(e - ref["esm2"]).max()) < 1e-5
    assert float(np.abs(d - ref["dnabert_s"]).max()) < 1e-5


# -- device machine ---------------------------------------------------------------------------
@gpu
def test_gpu_fp32_reproduces_golden(golden_tiny_dir: Path) -> None:
    ref = np.load(golden_tiny_dir / "ref_500_embeddings.npz")
    cuda = torch.device("cuda")
    esm = load_esm2_embedder(golden_tiny_dir / "esm2_t36_tiny.pt", cuda, Precision.FP32)
    dnabert = load_dnabert_embedder(golden_tiny_dir / "dnabert_s_tiny", cuda, Precision.FP32)
    assert esm.runner is not None and dnabert.runner is not None  # the fast path is what runs
    proteins = [str(s) for s in ref["esm_seqs"]]
    dna = [str(s) for s in ref["dnabert_seqs"]]
    e = torch.cat([esm.embed(proteins[i : i + 64]) for i in range(0, len(proteins), 64)]).numpy()
    d = torch.cat([dnabert.embed(dna[i : i + 64]) for i in range(0, len(dna), 64)]).numpy()
    assert float(np.abs(e - ref["esm2"]).max()) < 1e-4
    assert float(np.abs(d - ref["dnabert_s"]).max()) < 1e-4


@gpu
def test_gpu_compiled_bf16_agrees_with_fp32(demo_esm_checkpoint: Path, demo_dnabert_dir: Path) -> None:
    cuda = torch.device("cuda")
    for loader, path, seqs in (
        (load_esm2_embedder, demo_esm_checkpoint, PROTEINS * 4),
        (load_dnabert_embedder, demo_dnabert_dir, DNA * 4),
    ):
        ref = loader(path, cuda, Precision.FP32).embed(seqs)
        fast = loader(path, cuda, Precision.BF16)
        assert fast.runner.layer.enabled  # compiled by default on CUDA in bf16
        got = fast.embed(seqs)
        assert fast.runner.layer.failed is None
        cos = torch.nn.functional.cosine_similarity(ref, got)
        assert float(cos.min()) > 0.99


@gpu
def test_gpu_compiled_dnabert_pads_no_bias_per_layer() -> None:
    # SDPA's memory-efficient kernel pads a bias whose rows are not 16-aligned, inside compiled
    # graphs too; the aligned bias + opaque attention op must leave no pad kernel in a batch of
    # odd length. Head size 64 as the real model, so that kernel is the one chosen.
    from torch.profiler import ProfilerActivity, profile

    from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert
    from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer

    cuda = torch.device("cuda")
    config = DnabertConfig(hidden_size=128, num_attention_heads=2, num_hidden_layers=2,
                           intermediate_size=256)
    model = build_random_dnabert(config, cuda, torch.bfloat16)
    tokenizer = DnaTokenizer.from_model_dir(Path("/nonexistent"))
    embedder = DnabertEmbedder(model, tokenizer, **dnabert_fast_options(Precision.BF16))
    assert embedder.runner.layer.enabled and embedder.runner.opaque_attention is None  # not yet
    ids, keep = _dnabert_batch(embedder, ["ACGTTGCAGT" * 9 + "A", "GATTACA" * 5] * 40)
    assert ids.shape[1] % 16 != 0
    ids, keep = ids.to(cuda), keep.to(cuda)
    embedder.runner(ids, keep)  # compile
    assert embedder.runner.opaque_attention  # registered before the first compiled call
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        embedder.runner(ids, keep)
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages()]
    assert embedder.runner.layer.failed is None
    assert any("fmha" in n or "Attention" in n for n in names), names
    assert not any("constant_pad" in n for n in names), names
