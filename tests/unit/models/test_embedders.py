"""Embedders: batch = one-at-a-time, input order kept, ESM truncation, precision option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from virnucpro.config import Precision
from virnucpro.models.embedders import (
    ESM_MAX_RESIDUES,
    DnabertEmbedder,
    Esm2Embedder,
    load_dnabert_embedder,
    load_esm2_embedder,
)

CPU = torch.device("cpu")
DNA = ["ACGTACGGTTAC" * 40, "GATTACA", "", "TTTTGGGGCCCCAAAA" * 9, "ACGN" * 25]
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "M", "ACDEFGHIKLMNPQRSTVWY" * 4, "MLVK"]


@pytest.fixture(scope="module")
def dnabert(demo_dnabert_dir: Path) -> DnabertEmbedder:
    return load_dnabert_embedder(demo_dnabert_dir, CPU, Precision.FP32)


@pytest.fixture(scope="module")
def esm2(demo_esm_checkpoint: Path) -> Esm2Embedder:
    return load_esm2_embedder(demo_esm_checkpoint, CPU, Precision.FP32)


def test_dnabert_batch_equals_single_in_input_order(dnabert: DnabertEmbedder) -> None:
    batch = dnabert.embed(DNA)
    assert batch.shape == (len(DNA), dnabert.dim) and batch.dtype == torch.float32
    assert batch.device.type == "cpu"
    for i, seq in enumerate(DNA):
        assert torch.allclose(batch[i], dnabert.embed([seq])[0], atol=1e-5)


def test_dnabert_mean_includes_cls_and_sep(dnabert: DnabertEmbedder) -> None:
    ids = dnabert.tokenizer.encode(DNA[0])
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        hidden = dnabert.model(tokens, torch.ones_like(tokens))
    assert torch.allclose(dnabert.embed([DNA[0]])[0], hidden[0].mean(0), atol=1e-6)


def test_dnabert_token_lengths(dnabert: DnabertEmbedder) -> None:
    lengths = dnabert.token_lengths(DNA)
    assert lengths[2] == 2  # [CLS] [SEP]
    assert lengths == [len(dnabert.tokenizer.encode(s)) for s in DNA]


def test_esm_batch_equals_single_in_input_order(esm2: Esm2Embedder) -> None:
    batch = esm2.embed(PROTEINS)
    assert batch.shape == (len(PROTEINS), esm2.dim) == (4, 16)
    for i, protein in enumerate(PROTEINS):
        assert torch.allclose(batch[i], esm2.embed([protein])[0], atol=1e-5)


def test_esm_mean_excludes_bos_and_eos(esm2: Esm2Embedder) -> None:
    tokens = torch.tensor([esm2.alphabet.encode(PROTEINS[0])])
    with torch.inference_mode():
        rep = esm2.model(tokens)[0]
    expected = rep[1 : len(PROTEINS[0]) + 1].mean(0)
    assert torch.allclose(esm2.embed([PROTEINS[0]])[0], expected, atol=1e-6)


def test_esm_truncates_to_1024_residues(esm2: Esm2Embedder) -> None:
    long = ("MKTAYIAKQRQISFVKSHFSRQ" * 50)[:1100]
    assert esm2.token_lengths([long, "MKV"]) == [ESM_MAX_RESIDUES + 2, 5]
    truncated = esm2.embed([long[:ESM_MAX_RESIDUES]])
    assert torch.allclose(esm2.embed([long]), truncated, atol=1e-6)


def test_esm_rejects_empty_protein(esm2: Esm2Embedder) -> None:
    with pytest.raises(ValueError, match="empty protein"):
        esm2.embed(["MKV", ""])


def test_empty_batches(dnabert: DnabertEmbedder, esm2: Esm2Embedder) -> None:
    assert dnabert.embed([]).shape == (0, dnabert.dim)
    assert esm2.embed([]).shape == (0, esm2.dim)


@pytest.mark.parametrize("precision", [Precision.BF16, Precision.FP16])
def test_precision_option_changes_compute_dtype_not_output_dtype(
    demo_dnabert_dir: Path, demo_esm_checkpoint: Path, dnabert: DnabertEmbedder,
    esm2: Esm2Embedder, precision: Precision,
) -> None:  # fmt: skip
    low_dna = load_dnabert_embedder(demo_dnabert_dir, CPU, precision)
    low_esm = load_esm2_embedder(demo_esm_checkpoint, CPU, precision)
    expected = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[precision]
    assert low_dna.dtype == expected and low_esm.dtype == expected
    for low, high, seqs in ((low_dna, dnabert, DNA), (low_esm, esm2, PROTEINS)):
        out = low.embed(seqs)
        assert out.dtype == torch.float32
        diff = float((out - high.embed(seqs)).abs().max())
        assert 0 < diff < 0.1
