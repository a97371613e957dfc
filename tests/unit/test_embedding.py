"""The embedding loop on tiny real embedders (CPU): input order, counts, out-of-memory halving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from virnucpro.config import Precision
from virnucpro.models.embedders import Esm2Embedder, load_dnabert_embedder, load_esm2_embedder
from virnucpro.models.reference.esm2 import load_esm2
from virnucpro.pipeline.batching import is_uniform, pack_batches, padded_tokens
from virnucpro.pipeline.embedding import (
    DNABERT_ENCODE_GROUP,
    EmbeddingRunner,
    encode_group,
    packing_options,
)

CPU = torch.device("cpu")
DNA = ["ACGT" * n for n in (30, 3, 12, 25, 7, 18, 1, 12)] + ["GATTACA" * 9, "TTGCA" * 40]
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "M", "ACDEFGHIKLMNPQRSTVWY" * 4, "MLVK", "W" * 60, "MLVK"]


@pytest.fixture(scope="module")
def dnabert(demo_dnabert_dir: Path) -> Any:
    return load_dnabert_embedder(demo_dnabert_dir, CPU, Precision.FP32)


@pytest.fixture(scope="module")
def esm2(demo_esm_checkpoint: Path) -> Any:
    return load_esm2_embedder(demo_esm_checkpoint, CPU, Precision.FP32)


def _one_at_a_time(embedder: Any, sequences: list[str]) -> np.ndarray:
    alone = {s: embedder.embed([s])[0].numpy() for s in set(sequences)}
    return np.stack([alone[s] for s in sequences])


class _OutOfMemoryAbove:
    """A real embedder whose batches of more than ``limit`` padded tokens run out of memory, as
    on a GPU (a genuine ``torch.cuda.OutOfMemoryError``); records every batch it is given."""

    def __init__(self, embedder: Any, limit: int) -> None:
        self._embedder = embedder
        self.limit = limit
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def submit(self, rows: Any) -> Any:
        size = max(len(r) for r in rows) * len(rows)
        self.sizes.append(size)
        if size > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: a batch of {size} tokens")
        return self._embedder.submit(rows)


@pytest.mark.parametrize("group", [None, 1, 3])
def test_rows_follow_the_input_order(dnabert: Any, group: int | None) -> None:
    got = EmbeddingRunner(dnabert, budget=64, encode_group=group).embed(DNA)
    assert got.matrix.shape == (len(DNA), dnabert.dim) and got.matrix.dtype == np.float32
    np.testing.assert_allclose(got.matrix, _one_at_a_time(dnabert, DNA), atol=1e-5)
    assert got.lengths == tuple(dnabert.token_lengths(DNA))


def test_counts_say_what_was_computed(esm2: Any) -> None:
    runner = EmbeddingRunner(esm2, budget=100)
    got = runner.embed(PROTEINS)
    lengths = esm2.token_lengths(PROTEINS)
    batches = pack_batches(lengths, 100, **packing_options(esm2))
    c = got.counts
    assert (c.frames, c.tokens, c.oom_retries) == (len(PROTEINS), sum(lengths), 0)
    assert c.batches == len(batches) > 1  # ESM-2 is encoded at once: one packing for all
    assert c.padded_tokens == sum(padded_tokens(lengths, b) for b in batches) > c.tokens
    assert c.uniform_batches == sum(is_uniform(lengths, b) for b in batches)
    assert runner.budget == 100  # no out-of-memory error: the budget stays
    np.testing.assert_allclose(got.matrix, _one_at_a_time(esm2, PROTEINS), atol=1e-5)


def test_packed_batches_compute_no_padding(demo_esm_checkpoint: Path) -> None:
    packed = Esm2Embedder(load_esm2(demo_esm_checkpoint, CPU, torch.float32), fast=True,
                          compile=False, packed=True)
    got = EmbeddingRunner(packed, budget=100).embed(PROTEINS)
    assert got.counts.padded_tokens == got.counts.tokens
    np.testing.assert_allclose(got.matrix, _one_at_a_time(packed, PROTEINS), atol=1e-5)


def test_out_of_memory_halves_the_batch_and_lowers_the_budget(esm2: Any) -> None:
    proteins = ["ACDEFGHIKLMNPQRSTVWY" * 2 + "MKTAYIAK"] * 20 + ["MLVK"]  # 20 of 50 tokens first
    embedder = _OutOfMemoryAbove(esm2, limit=300)
    runner = EmbeddingRunner(embedder, budget=1000)
    got = runner.embed(proteins)
    assert got.counts.oom_retries == 3  # 20 x 50 tokens -> 10 + 10 -> each 10 -> 5 + 5
    assert runner.budget == 256  # half of the last batch that ran out, at least the minimum
    assert sorted(s for s in embedder.sizes if s > 300) == [500, 500, 1000]
    np.testing.assert_allclose(got.matrix, _one_at_a_time(esm2, proteins), atol=1e-5)
    embedder.sizes.clear()
    again = runner.embed(proteins)  # a later call starts from the lowered budget
    assert again.counts.oom_retries == 0 and max(embedder.sizes) <= 256
    np.testing.assert_allclose(again.matrix, got.matrix, atol=1e-5)


def test_a_single_sequence_that_does_not_fit_is_an_error(esm2: Any) -> None:
    runner = EmbeddingRunner(_OutOfMemoryAbove(esm2, limit=50), budget=4096)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="62 tokens"):
        runner.embed(["W" * 60])


def test_result_waits_once_and_empty_input(esm2: Any) -> None:
    pending = EmbeddingRunner(esm2, budget=64).submit(PROTEINS)
    first = pending.result()
    assert pending.result().matrix is first.matrix
    empty = EmbeddingRunner(esm2, budget=64).embed([])
    assert empty.matrix.shape == (0, esm2.dim) and empty.counts.batches == 0
    with pytest.raises(ValueError, match="at least 1"):
        EmbeddingRunner(esm2, budget=0)


def test_dnabert_is_tokenised_in_groups_esm_at_once(dnabert: Any, esm2: Any) -> None:
    assert encode_group(dnabert) == DNABERT_ENCODE_GROUP
    assert encode_group(_OutOfMemoryAbove(dnabert, 1)) == DNABERT_ENCODE_GROUP  # wrappers too
    assert encode_group(esm2) is None
