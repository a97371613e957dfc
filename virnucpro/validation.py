"""``virnucpro validate-precision``: how much a faster precision changes YOUR results.

Runs the pipeline's own embedders (the same loaders, fast path, token budget and embedding loop
the workers use: :mod:`virnucpro.pipeline.embedding`) on a sample of an input FASTA, once in fp32
and once per precision asked for, on the same device, inputs and weights, then classifies both in
fp32 on the CPU, as the pipeline does. Reported per precision:

- per model: cosine similarity of each frame's embedding to its fp32 embedding (min, median);
- max |P(virus) difference| over frames;
- label agreement with fp32: per frame (the argmax of ``prediction_results.txt``) and per chunk
  (the original's highest-score rule of ``prediction_results_highestscore.csv``).

The sample is the input's first ``max_frames`` kept frames (default 2,000), in input order.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virnucpro.config import Precision

__all__ = [
    "ModelAgreement",
    "PrecisionAgreement",
    "ValidationResult",
    "sample_frames",
    "compare_embeddings",
    "validate_precision",
    "format_table",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 2000


@dataclass(frozen=True, slots=True)
class ModelAgreement:
    """Cosine similarity of one model's embeddings at a precision to its fp32 embeddings."""

    model: str
    cosine_min: float
    cosine_median: float
    max_abs_diff: float


@dataclass(frozen=True, slots=True)
class PrecisionAgreement:
    """One precision against fp32: embeddings, scores and labels."""

    precision: str
    models: tuple[ModelAgreement, ...]
    max_abs_score_diff: float
    frame_label_agreement: float
    chunk_label_agreement: float
    frames_differing: int
    chunks_differing: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ValidationResult:
    input_fasta: str
    device: str
    n_frames: int
    n_chunks: int
    chunk_length: int
    rows: tuple[PrecisionAgreement, ...]
    fp32_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_frames(input_fasta: Path, chunk_length: int, max_frames: int) -> list:
    """The first ``max_frames`` kept frames of the input (``Frame`` records), in input order."""
    from virnucpro.domain.fasta import read_fasta
    from virnucpro.domain.prepare import iter_frames

    frames = []
    for record in iter_frames(read_fasta(input_fasta), chunk_length):
        for frame in record.frames:
            frames.append(frame)
            if len(frames) >= max_frames:
                return frames
    return frames


def compare_embeddings(name: str, reference: np.ndarray, other: np.ndarray) -> ModelAgreement:
    """Per-row cosine similarity (min, median) and the largest absolute difference."""
    ref = reference.astype(np.float64)
    oth = other.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1)
    cosine = (ref * oth).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    return ModelAgreement(
        model=name,
        cosine_min=float(cosine.min()) if len(cosine) else float("nan"),
        cosine_median=float(np.median(cosine)) if len(cosine) else float("nan"),
        max_abs_diff=float(np.abs(ref - oth).max()) if len(cosine) else 0.0,
    )


def _chunk_labels(frame_ids: Sequence[str], probs: np.ndarray) -> dict[str, bool]:
    from virnucpro.domain.calls import call_chunks
    from virnucpro.domain.records import FrameScore

    scores = [FrameScore(f, float(p[0]), float(p[1])) for f, p in zip(frame_ids, probs)]
    return {c.chunk_id: c.is_virus for c in call_chunks(scores)}


def validate_precision(
    input_fasta: Path,
    dnabert_model: Path,
    esm_model: Path,
    classifier: Path,
    *,
    device: str = "cpu",
    precisions: Sequence[Precision] = (Precision.BF16, Precision.FP16),
    chunk_length: int = 500,
    max_frames: int = DEFAULT_MAX_FRAMES,
    token_budget: int | None = None,
    compile: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> ValidationResult:
    """Embed a sample at fp32 and at each precision on ``device``; compare (see module text)."""
    import torch

    from virnucpro.models.embedders import load_dnabert_embedder, load_esm2_embedder
    from virnucpro.models.reference.classifier import classify, load_classifier
    from virnucpro.pipeline.budget import batch_budget
    from virnucpro.pipeline.embedding import EmbeddingRunner

    say = progress or (lambda _msg: None)
    torch_device = torch.device(device)
    frames = sample_frames(Path(input_fasta), chunk_length, max_frames)
    if not frames:
        from virnucpro.errors import InputError

        raise InputError(f"{input_fasta}: no stop-free frame to embed; nothing to compare")
    frame_ids = [f.id for f in frames]
    dna = [f.dna for f in frames]
    proteins = [f.protein for f in frames]
    model = load_classifier(Path(classifier))

    def embed(embedder: Any, precision: Precision, sequences: list[str]) -> np.ndarray:
        budget = batch_budget(torch_device, embedder.dim, precision, token_budget)  # a worker's
        return EmbeddingRunner(embedder, budget).embed(sequences).matrix

    def run(precision: Precision) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        started = time.perf_counter()
        say(f"{precision.value}: DNABERT-S on {len(dna)} frames")
        embedder = load_dnabert_embedder(Path(dnabert_model), torch_device, precision, compile=compile)
        dnabert = embed(embedder, precision, dna)
        del embedder
        say(f"{precision.value}: ESM-2 on {len(proteins)} frames")
        embedder = load_esm2_embedder(Path(esm_model), torch_device, precision, compile=compile)
        esm = embed(embedder, precision, proteins)
        del embedder
        gc.collect()
        if torch_device.type == "cuda":
            torch.cuda.empty_cache()
        merged = np.concatenate([dnabert, esm], axis=1)
        probs = classify(model, torch.from_numpy(merged))
        return dnabert, esm, probs, time.perf_counter() - started

    ref_dna, ref_esm, ref_probs, ref_seconds = run(Precision.FP32)
    ref_frames = ref_probs[:, 1] > ref_probs[:, 0]
    ref_chunks = _chunk_labels(frame_ids, ref_probs)
    rows = []
    for precision in precisions:
        if precision is Precision.FP32:
            continue
        dnabert, esm, probs, seconds = run(precision)
        labels = probs[:, 1] > probs[:, 0]
        chunks = _chunk_labels(frame_ids, probs)
        chunk_diff = sum(chunks[c] != ref_chunks[c] for c in ref_chunks)
        rows.append(
            PrecisionAgreement(
                precision=precision.value,
                models=(
                    compare_embeddings("DNABERT-S", ref_dna, dnabert),
                    compare_embeddings("ESM-2", ref_esm, esm),
                ),
                max_abs_score_diff=float(np.abs(probs - ref_probs).max()),
                frame_label_agreement=float((labels == ref_frames).mean()),
                chunk_label_agreement=1.0 - chunk_diff / max(1, len(ref_chunks)),
                frames_differing=int((labels != ref_frames).sum()),
                chunks_differing=int(chunk_diff),
                seconds=seconds,
            )
        )
    notes = []
    if len(frames) >= max_frames:
        notes.append(f"sample: the first {max_frames} frames of the input")
    return ValidationResult(
        input_fasta=str(input_fasta),
        device=str(torch_device),
        n_frames=len(frames),
        n_chunks=len(ref_chunks),
        chunk_length=chunk_length,
        rows=tuple(rows),
        fp32_seconds=ref_seconds,
        notes=notes,
    )


def format_table(result: ValidationResult) -> str:
    """The agreement table as plain text (one row per precision and model)."""
    header = (
        f"{'precision':<9} {'model':<10} {'cos min':>10} {'cos median':>11} "
        f"{'max|dScore|':>11} {'frames agree':>13} {'chunks agree':>13}"
    )
    lines = [
        f"{result.n_frames} frames, {result.n_chunks} chunks of {result.input_fasta} "
        f"on {result.device}, each precision against fp32:",
        header,
    ]
    for row in result.rows:
        for k, m in enumerate(row.models):
            tail = (
                f" {row.max_abs_score_diff:>11.2e} {row.frame_label_agreement:>12.2%} "
                f"{row.chunk_label_agreement:>12.2%}"
                if k == 0
                else ""
            )
            lines.append(
                f"{row.precision:<9} {m.model:<10} {m.cosine_min:>10.6f} {m.cosine_median:>11.6f}"
                + tail
            )
    lines.extend(result.notes)
    return "\n".join(lines)

