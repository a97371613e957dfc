"""Our native encoders and safe classifier loading reproduce the original tool's numbers.

Golden: ``shared/golden/vanilla-tiny`` (the unmodified original VirNucPro on tiny random models
with the real architectures). Everything here runs on the CPU in fp32.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from virnucpro.config import Precision
from virnucpro.models.embedders import (
    DnabertEmbedder,
    Esm2Embedder,
    load_dnabert_embedder,
    load_esm2_embedder,
)
from virnucpro.models.reference.classifier import classify, load_classifier
from virnucpro.models.reference.dnabert import DnabertS, alibi_slopes

TOLERANCE = 1e-5
CPU = torch.device("cpu")
log = logging.getLogger(__name__)


def _one_at_a_time(embedder: DnabertEmbedder | Esm2Embedder, seqs: list[str]) -> np.ndarray:
    return torch.cat([embedder.embed([s]) for s in seqs]).numpy()


@pytest.fixture(scope="module")
def one_at_a_time() -> Callable[[DnabertEmbedder | Esm2Embedder, list[str]], np.ndarray]:
    """``_one_at_a_time``, computed once per (embedder, sequences) in this module; only for
    embedders left as loaded (a test that changes a model calls ``_one_at_a_time`` itself)."""
    done: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}

    def embed(embedder: DnabertEmbedder | Esm2Embedder, seqs: list[str]) -> np.ndarray:
        key = (id(embedder), tuple(seqs))
        if key not in done:
            done[key] = _one_at_a_time(embedder, seqs)
        return done[key]

    return embed


def _batched(embedder: DnabertEmbedder | Esm2Embedder, seqs: list[str], size: int) -> np.ndarray:
    """Mixed-length batches (input order, so lengths vary inside each batch and padding occurs)."""
    return torch.cat([embedder.embed(seqs[i : i + size]) for i in range(0, len(seqs), size)]).numpy()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on a shared, busy CPU threads cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dnabert(golden_tiny_dir: Path) -> DnabertEmbedder:
    return load_dnabert_embedder(golden_tiny_dir / "dnabert_s_tiny", CPU, Precision.FP32)


@pytest.fixture(scope="module")
def dnabert_12h(golden_tiny_dir: Path) -> DnabertEmbedder:
    return load_dnabert_embedder(golden_tiny_dir / "dnabert_s_tiny_12h", CPU, Precision.FP32)


@pytest.fixture(scope="module")
def esm2(golden_tiny_dir: Path) -> Esm2Embedder:
    return load_esm2_embedder(golden_tiny_dir / "esm2_t36_tiny.pt", CPU, Precision.FP32)


@pytest.mark.parametrize("chunk_length", [500, 300])
def test_dnabert_matches_golden(
    golden_tiny_dir: Path, dnabert: DnabertEmbedder, chunk_length: int, one_at_a_time
) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(golden_tiny_dir / f"ref_{chunk_length}_embeddings.npz")
    seqs = [str(s) for s in ref["dnabert_seqs"]]
    ours = one_at_a_time(dnabert, seqs)
    diff = float(np.abs(ours - ref["dnabert_s"]).max())
    log.info("DNABERT-S %d: max |diff| vs golden = %.3g", chunk_length, diff)
    assert ours.shape == ref["dnabert_s"].shape
    assert diff < TOLERANCE, f"max |diff| {diff}"


def test_dnabert_12_heads_matches_golden(golden_tiny_dir: Path, dnabert_12h: DnabertEmbedder, one_at_a_time) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(golden_tiny_dir / "ref_500_dnabert_12h_embeddings.npz")
    seqs = [str(s) for s in ref["seqs"]]
    ours = one_at_a_time(dnabert_12h, seqs)
    diff = float(np.abs(ours - ref["embeddings"]).max())
    log.info("DNABERT-S 12 heads: max |diff| vs golden = %.3g", diff)
    assert diff < TOLERANCE, f"max |diff| {diff}"


@pytest.mark.parametrize(
    "wrong_slopes",
    [
        pytest.param(sorted(alibi_slopes(12), reverse=True), id="sorted"),
        pytest.param([2 ** (-8 * (i + 1) / 12) for i in range(12)], id="power-of-two-formula"),
    ],
)
def test_dnabert_wrong_alibi_slopes_do_not_match(
    golden_tiny_dir: Path, dnabert_12h: DnabertEmbedder, wrong_slopes: list[float]
) -> None:
    """Negative control: the 12-head golden really pins the slope formula and head order."""
    ref = np.load(golden_tiny_dir / "ref_500_dnabert_12h_embeddings.npz")
    seqs = [str(s) for s in ref["seqs"][:20]]
    model: DnabertS = dnabert_12h.model
    correct = model.slopes.clone()
    try:
        model.slopes = torch.tensor(wrong_slopes, dtype=torch.float32)
        ours = _one_at_a_time(dnabert_12h, seqs)
    finally:
        model.slopes = correct
    per_frame = np.abs(ours - ref["embeddings"][:20]).max(axis=1)
    assert per_frame.min() > 1e-2


@pytest.mark.parametrize("chunk_length", [500, 300])
def test_esm2_matches_golden(golden_tiny_dir: Path, esm2: Esm2Embedder, chunk_length: int, one_at_a_time) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(golden_tiny_dir / f"ref_{chunk_length}_embeddings.npz")
    seqs = [str(s) for s in ref["esm_seqs"]]
    ours = one_at_a_time(esm2, seqs)
    diff = float(np.abs(ours - ref["esm2"]).max())
    log.info("ESM-2 %d: max |diff| vs golden = %.3g", chunk_length, diff)
    assert diff < TOLERANCE, f"max |diff| {diff}"


def test_batched_equals_one_at_a_time(
    golden_tiny_dir: Path, dnabert_12h: DnabertEmbedder, esm2: Esm2Embedder, one_at_a_time
) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(golden_tiny_dir / "ref_500_embeddings.npz")
    dna = [str(s) for s in ref["dnabert_seqs"]]
    proteins = [str(s) for s in ref["esm_seqs"]]
    assert len({len(s) for s in dna[:16]}) > 1 and len({len(s) for s in proteins[:16]}) > 1
    for embedder, seqs in ((dnabert_12h, dna), (esm2, proteins)):
        single = one_at_a_time(embedder, seqs)  # the golden tests' embeddings of the same lists
        for size in (16, 257):
            batched = _batched(embedder, seqs, size)
            assert float(np.abs(batched - single).max()) < TOLERANCE


def _golden_scores(path: Path) -> dict[str, tuple[str, float, float]]:
    with path.open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
    return {r[0]: (r[1], float(r[2]), float(r[3])) for r in rows[1:]}


def test_full_feature_path_reproduces_predictions(
    golden_tiny_dir: Path, dnabert: DnabertEmbedder, esm2: Esm2Embedder
) -> None:
    """Our DNABERT-S + ESM-2 features, joined by ID, through the golden classifier pickle."""
    ref = np.load(golden_tiny_dir / "ref_500_embeddings.npz")
    dna_vectors = _batched(dnabert, [str(s) for s in ref["dnabert_seqs"]], 64)
    protein_vectors = _batched(esm2, [str(s) for s in ref["esm_seqs"]], 64)
    dna = dict(zip(map(str, ref["dnabert_ids"]), dna_vectors))
    prot = dict(zip(map(str, ref["esm_ids"]), protein_vectors))
    golden = _golden_scores(golden_tiny_dir / "ref_500_prediction_results.txt")
    ids = list(golden)  # the original's row order (identified-nucleotide order)
    assert set(ids) == set(dna) == set(prot)
    features = torch.from_numpy(np.stack([np.concatenate([dna[i], prot[i]]) for i in ids]))
    merged = dict(zip(map(str, ref["merged_ids"]), ref["merged"]))
    assert float(np.abs(features.numpy() - np.stack([merged[i] for i in ids])).max()) < TOLERANCE

    scores = classify(load_classifier(golden_tiny_dir / "tiny_500_model.pth"), features)
    expected = np.array([[golden[i][1], golden[i][2]] for i in ids], dtype=np.float32)
    diff = float(np.abs(scores - expected).max())
    log.info("classifier scores: max |diff| vs golden = %.3g", diff)
    assert diff < TOLERANCE
    labels = ["virus" if s[1] > s[0] else "others" for s in scores]
    assert labels == [golden[i][0] for i in ids]
    assert labels.count("virus") == 124 and labels.count("others") == 133


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    ("precision", "tolerance"),
    [(Precision.FP32, TOLERANCE), (Precision.BF16, 0.1), (Precision.FP16, 0.02)],
)
def test_golden_on_cuda(golden_tiny_dir: Path, precision: Precision, tolerance: float) -> None:
    """On the GPU: fp32 reproduces the golden; bf16/fp16 run (no fp32-bias crash) and stay close."""
    device = torch.device("cuda")
    ref = np.load(golden_tiny_dir / "ref_500_embeddings.npz")
    ref12 = np.load(golden_tiny_dir / "ref_500_dnabert_12h_embeddings.npz")
    cases = [
        (load_dnabert_embedder(golden_tiny_dir / "dnabert_s_tiny", device, precision),
         ref["dnabert_seqs"], ref["dnabert_s"]),
        (load_dnabert_embedder(golden_tiny_dir / "dnabert_s_tiny_12h", device, precision),
         ref12["seqs"], ref12["embeddings"]),
        (load_esm2_embedder(golden_tiny_dir / "esm2_t36_tiny.pt", device, precision),
         ref["esm_seqs"], ref["esm2"]),
    ]  # fmt: skip
    for embedder, seqs, expected in cases:
        ours = _batched(embedder, [str(s) for s in seqs], 64)
        diff = float(np.abs(ours - expected).max())
        name = type(embedder).__name__
        log.info("%s on CUDA %s: max |diff| vs golden = %.3g", name, precision.value, diff)
        assert np.isfinite(ours).all() and diff < tolerance
