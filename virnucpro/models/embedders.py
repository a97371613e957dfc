"""The compute API of the worker processes: a batch of sequences in, one embedding per sequence out.

The caller forms the batches (token-budgeted, see :mod:`virnucpro.pipeline.batching`, using
``token_lengths``); an embedder pads a batch, runs the encoder once and returns ``[N, dim]``
float32 on the CPU, row *i* for input *i*. A sequence's embedding does not depend on the rest of
its batch (up to float rounding; tested against one-at-a-time).

- DNABERT-S: mean of the last hidden state over ALL tokens, ``[CLS]`` and ``[SEP]`` included
  (REFERENCE.md §4), as a mask-weighted mean.
- ESM-2: last-layer representation averaged over residue positions 1..min(1024, p); proteins
  longer than 1024 residues are truncated as fair-esm's batch converter does with
  ``truncation_seq_length=1024`` (BOS/EOS excluded from the mean).
"""

from __future__ import annotations

from pathlib import Path

import torch

from virnucpro.config import Precision
from virnucpro.models.dnabert import DnabertS, load_dnabert
from virnucpro.models.dnabert_tokenizer import DnaTokenizer
from virnucpro.models.esm2 import Esm2Encoder, load_esm2
from virnucpro.models.precision import torch_dtype

__all__ = [
    "DnabertEmbedder",
    "Esm2Embedder",
    "load_dnabert_embedder",
    "load_esm2_embedder",
    "ESM_MAX_RESIDUES",
]

ESM_MAX_RESIDUES = 1024


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return padded.to(device, non_blocking=True)


def _masked_mean(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``keep`` is true, fp32, ``[B, T, D] -> [B, D]``."""
    weights = keep.to(torch.float32).unsqueeze(-1)
    total = (hidden.to(torch.float32) * weights).sum(dim=1)
    return total / weights.sum(dim=1)


class DnabertEmbedder:
    """DNABERT-S features: ``embed(dna) -> [N, dim]`` float32 on the CPU."""

    def __init__(self, model: DnabertS, tokenizer: DnaTokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        first = next(model.parameters())
        self.device = first.device
        self.dtype = model.encoder.layer[0].attention.self.Wqkv.weight.dtype

    @property
    def dim(self) -> int:
        return self.model.dim

    def token_lengths(self, sequences: list[str]) -> list[int]:
        """Tokens per sequence, ``[CLS]`` and ``[SEP]`` included (the padded-cost unit)."""
        return [len(ids) for ids in self.tokenizer.encode_batch(sequences)]

    def embed(self, sequences: list[str]) -> torch.Tensor:
        """Mean over all tokens (``[CLS]``/``[SEP]`` included) of the last hidden state."""
        if not sequences:
            return torch.empty((0, self.dim), dtype=torch.float32)
        rows = self.tokenizer.encode_batch(sequences)
        ids = _pad(rows, self.tokenizer.pad_id, self.device)
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        mask = torch.arange(ids.shape[1], device=self.device)[None, :] < lengths[:, None]
        with torch.inference_mode():
            hidden = self.model(ids, mask.to(torch.long))
            return _masked_mean(hidden, mask).cpu()


class Esm2Embedder:
    """ESM-2 features: ``embed(proteins) -> [N, dim]`` float32 on the CPU."""

    def __init__(self, model: Esm2Encoder, max_residues: int = ESM_MAX_RESIDUES) -> None:
        self.model = model
        self.alphabet = model.alphabet
        self.max_residues = max_residues
        first = next(model.parameters())
        self.device = first.device
        self.dtype = model.layers[0].fc1.weight.dtype

    @property
    def dim(self) -> int:
        return self.model.dim

    def token_lengths(self, proteins: list[str]) -> list[int]:
        """Tokens per protein after truncation, BOS and EOS included."""
        return [min(len(p), self.max_residues) + 2 for p in proteins]

    def embed(self, proteins: list[str]) -> torch.Tensor:
        """Mean of the last-layer representation over residues 1..min(1024, p)."""
        if not proteins:
            return torch.empty((0, self.dim), dtype=torch.float32)
        truncated = [p[: self.max_residues] for p in proteins]
        if any(not p for p in truncated):
            raise ValueError("an empty protein has no residues to average; drop it before ESM-2")
        rows = [self.alphabet.encode(p) for p in truncated]
        tokens = _pad(rows, self.alphabet.padding_idx, self.device)
        residues = torch.tensor([len(p) for p in truncated], device=self.device)
        position = torch.arange(tokens.shape[1], device=self.device)[None, :]
        keep = (position >= 1) & (position <= residues[:, None])
        with torch.inference_mode():
            return _masked_mean(self.model(tokens), keep).cpu()


def load_dnabert_embedder(
    path: Path, device: torch.device, precision: Precision = Precision.FP32
) -> DnabertEmbedder:
    """Load DNABERT-S from its directory onto ``device`` at ``precision``."""
    model, tokenizer = load_dnabert(Path(path), torch.device(device), torch_dtype(precision))
    return DnabertEmbedder(model, tokenizer)


def load_esm2_embedder(
    path: Path, device: torch.device, precision: Precision = Precision.FP32
) -> Esm2Embedder:
    """Load ESM-2 from a fair-esm checkpoint file onto ``device`` at ``precision``."""
    return Esm2Embedder(load_esm2(Path(path), torch.device(device), torch_dtype(precision)))
