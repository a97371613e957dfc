"""Packed ESM-2 batches (no padding): layout, pooling, attention per sequence, and the packed
encoder computing the padded encoder's function. CPU tests use the reference attention (one SDPA
call per sequence); ``gpu`` tests check flash attention's variable-length kernel against the plain
module."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from virnucpro.config import Precision
from virnucpro.models.embedders import Esm2Embedder, load_dnabert_embedder, load_esm2_embedder
from virnucpro.models.fast.esm2 import FastEsm2
from virnucpro.models.fast.packing import pack_rows, pool_packed, varlen_attention
from virnucpro.models.reference.esm2 import Esm2Spec, load_esm2

CPU = torch.device("cpu")
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MLVKAYIAKQRQWFVKSHFSRQ", "ACDEFGHIKLMNPQRSTVWY" * 3, "MKW"]


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_cuda(test))


def _padded_tokens(model, proteins: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    rows = [model.alphabet.encode(p) for p in proteins]
    out = torch.full((len(rows), max(map(len, rows))), model.alphabet.padding_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def test_pack_rows_layout_and_pooling() -> None:
    batch = pack_rows([[5, 6, 7, 8], [9, 10, 11]], CPU)
    assert batch.tokens.tolist() == [5, 6, 7, 8, 9, 10, 11]
    assert batch.positions.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert batch.seq_index.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch.cu_seqlens.tolist() == [0, 4, 7] and batch.cu_seqlens.dtype == torch.int32
    assert batch.max_length == 4 and batch.n_tokens == 7 and batch.n_sequences == 2
    assert batch.gather.tolist() == [[7, 1, 2, 7], [7, 5, 7, 7]]  # 7 = the zero row
    assert batch.counts.tolist() == [2.0, 1.0]
    hidden = torch.arange(14, dtype=torch.float32).view(7, 2)
    pooled = pool_packed(hidden, batch)
    assert torch.equal(pooled, torch.stack([hidden[1:3].mean(0), hidden[5]]))


def test_pack_rows_refuses_what_has_nothing_to_average() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pack_rows([], CPU)
    with pytest.raises(ValueError, match="token to average"):
        pack_rows([[1, 2, 3], [1, 2]], CPU)  # BOS + EOS only


def test_reference_attention_stays_within_each_sequence() -> None:
    torch.manual_seed(0)
    lengths = [5, 3, 7]
    heads, hd = 2, 4
    q, k, v = (torch.randn(sum(lengths), heads, hd) for _ in range(3))
    batch = pack_rows([[1] * n for n in lengths], CPU)
    got = varlen_attention(q, k, v, batch, scale=hd**-0.5)
    start = 0
    for n in lengths:  # plain softmax attention over one sequence at a time
        sl = slice(start, start + n)
        scores = torch.einsum("ihd,jhd->hij", q[sl], k[sl]) * hd**-0.5
        want = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[sl])
        assert torch.allclose(got[sl], want, atol=1e-5)
        start += n


@pytest.mark.parametrize("which", ["demo", "multi_head"])
def test_packed_esm_equals_padded_fp32(which: str, demo_esm_checkpoint: Path, tmp_path: Path) -> None:
    from virnucpro.models.demo import write_esm2_checkpoint

    path = demo_esm_checkpoint
    if which == "multi_head":
        spec = Esm2Spec("esm2_t3_tiny", num_layers=3, embed_dim=40, attention_heads=5)
        path = write_esm2_checkpoint(tmp_path / "esm2_t3_tiny.pt", spec, seed=7)
    model = load_esm2(path, CPU, torch.float32)
    rows = [model.alphabet.encode(p) for p in PROTEINS]
    rows[0][5] = model.alphabet.mask_idx  # token-dropout rescaling, per sequence
    fast = FastEsm2(model)
    padded = _padded_tokens(model, PROTEINS)
    padded[0, 5] = model.alphabet.mask_idx
    expected = fast(padded, uniform=False)
    batch = pack_rows(rows, CPU)
    got = fast.forward_packed(batch)
    for i, (lo, hi) in enumerate(zip(batch.cu_seqlens[:-1].tolist(), batch.cu_seqlens[1:].tolist())):
        assert float((got[lo:hi] - expected[i, : hi - lo]).abs().max()) < 1e-5


def test_packed_esm_options_bf16(demo_esm_checkpoint: Path) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.bfloat16)
    reference = Esm2Embedder(model, fast=False).embed(PROTEINS)
    for options in ({}, {"residual_dtype": torch.bfloat16}, {"fused_gelu": True}):
        embedder = Esm2Embedder(model, fast=True, compile=False, packed=True, **options)
        assert embedder.packed
        got = embedder.embed(PROTEINS)
        assert float(F.cosine_similarity(got, reference).min()) > 0.999, options
    with pytest.raises(ValueError, match="bf16/fp16 only"):
        FastEsm2(load_esm2(demo_esm_checkpoint, CPU, torch.float32), fused_gelu=True)


def test_packed_embedder_equals_padded_and_compiles(demo_esm_checkpoint: Path, demo_dnabert_dir: Path) -> None:
    esm = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    padded = Esm2Embedder(esm, fast=True, compile=False)
    assert not padded.packed  # the CPU default: padded (fp32 reference)
    packed = Esm2Embedder(esm, fast=True, compile=True, packed=True)
    for fn in packed.runner.compiled_functions:
        fn.backend = "aot_eager"
    assert torch.allclose(packed.embed(PROTEINS), padded.embed(PROTEINS), atol=1e-5)
    assert all(fn.failed is None for fn in packed.runner.compiled_functions)
    assert packed.runner.packed_rotary.calls == esm.spec.num_layers
    dna = load_dnabert_embedder(demo_dnabert_dir, CPU)
    assert not dna.packed  # the CPU default: padded (fp32 reference)


def test_packed_failure_falls_back_to_padded(
    demo_esm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    embedder = Esm2Embedder(model, fast=True, compile=False, packed=True)
    expected = embedder.embed(PROTEINS)

    def broken(batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(embedder.runner, "embed_packed", broken)
    with caplog.at_level(logging.WARNING):
        got = embedder.embed(PROTEINS)
    assert not embedder.packed and "no kernel image" in embedder.packing.failed
    assert "packed batches turned off" in caplog.text
    assert torch.allclose(got, expected, atol=1e-5)


def test_self_check_turns_packing_off_when_it_disagrees(demo_esm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    good = Esm2Embedder(model, fast=True, compile=False, packed=True)
    good.check_packed(PROTEINS)
    assert good.packed and good.packing.check_cosine > 0.99999
    bad = Esm2Embedder(model, fast=True, compile=False, packed=True)
    real = bad.runner.embed_packed
    monkeypatch.setattr(bad.runner, "embed_packed", lambda batch: -real(batch))
    bad.check_packed(PROTEINS)
    assert not bad.packed and "self-check cosine" in bad.packing.failed


# -- device machine ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def esm_head64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ESM-2 with ESM-2 3B's head size (64; flash needs a multiple of 8), 4 layers."""
    from virnucpro.models.demo import write_esm2_checkpoint

    spec = Esm2Spec("esm2_t4_head64", num_layers=4, embed_dim=256, attention_heads=4)
    return write_esm2_checkpoint(tmp_path_factory.mktemp("esm") / "esm2_t4_head64.pt", spec, seed=3)


@gpu
def test_gpu_flash_varlen_matches_plain_module(esm_head64: Path, demo_esm_checkpoint: Path) -> None:
    cuda = torch.device("cuda")
    esm = load_esm2_embedder(esm_head64, cuda, Precision.BF16)
    assert esm.packed  # the default on CUDA in bf16
    esm.warmup(2048)
    assert esm.packed and esm.packing.check_cosine > 0.999, esm.packing.failed
    ref = Esm2Embedder(esm.model, fast=False).embed(PROTEINS * 3)
    got = esm.embed(PROTEINS * 3)
    assert float(F.cosine_similarity(got, ref).min()) > 0.999
    assert esm.packed and all(f.failed is None for f in esm.runner.compiled_functions)
    odd = load_esm2_embedder(demo_esm_checkpoint, cuda, Precision.BF16)  # head size not /8
    assert not odd.packed


@gpu
def test_gpu_fused_gelu_agrees(esm_head64: Path) -> None:
    cuda = torch.device("cuda")
    model = load_esm2(esm_head64, cuda, torch.bfloat16)
    ref = Esm2Embedder(model, fast=False).embed(PROTEINS * 3)
    fused = Esm2Embedder(model, fast=True, packed=True, fused_gelu=True)
    got = fused.embed(PROTEINS * 3)
    assert fused.packed and float(F.cosine_similarity(got, ref).min()) > 0.999


def test_packed_depth_is_the_model_cut_to_its_first_layers(tmp_path: Path) -> None:
    import copy

    from virnucpro.models.demo import write_esm2_checkpoint

    spec = Esm2Spec("esm2_t4_tiny", num_layers=4, embed_dim=40, attention_heads=5)
    model = load_esm2(write_esm2_checkpoint(tmp_path / "esm2_t4_tiny.pt", spec, seed=3), CPU, torch.float32)
    batch = pack_rows([model.alphabet.encode(p) for p in PROTEINS], CPU)
    whole = FastEsm2(model).forward_packed(batch)
    for depth in (1, 2, 4):
        cut = copy.deepcopy(model)
        cut.layers = cut.layers[:depth]
        want = FastEsm2(cut).forward_packed(batch)
        got = FastEsm2(model).forward_packed(batch, depth=depth)
        assert float((got - want).abs().max()) < 1e-5, depth
        assert (depth == 4) == bool(float((got - whole).abs().max()) < 1e-6)
    for bad in (0, 5):
        with pytest.raises(ValueError, match="this ESM-2 has 4 layers"):
            FastEsm2(model).forward_packed(batch, depth=bad)


def test_packed_warm_up_batch_runs_the_first_layers_only(tmp_path: Path) -> None:
    from virnucpro.models.demo import write_esm2_checkpoint
    from virnucpro.models.fast.esm2 import WARM_DEPTH

    spec = Esm2Spec("esm2_t6_tiny", num_layers=6, embed_dim=40, attention_heads=5)
    model = load_esm2(write_esm2_checkpoint(tmp_path / "esm2_t6_tiny.pt", spec, seed=5), CPU, torch.float32)
    embedder = Esm2Embedder(model, fast=True, compile=True, packed=True)
    for fn in embedder.runner.compiled_functions:
        fn.backend = "aot_eager"
    steps = embedder.warmup(1024)
    assert set(steps) == {"batch", "self-check"} and embedder.packed
    # the rotary step runs once per layer: the warm-up batch WARM_DEPTH layers, the self-check's
    # packed batch every layer (it is compared with the plain module's whole forward)
    assert WARM_DEPTH < spec.num_layers
    assert embedder.runner.packed_rotary.calls == WARM_DEPTH + spec.num_layers
