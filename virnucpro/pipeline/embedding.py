"""The embedding loop: sequences in, one fp32 embedding per sequence out, in input order.

The one loop behind the workers (a shard per call), ``validate-precision`` and the benchmark:

- sequences are tokenised longest first, DNABERT-S's a group ahead of the GPU in a background
  thread (:mod:`~virnucpro.pipeline.encode_ahead`); ESM-2's encoding is a table lookup, done at
  once;
- each group is cut into length-sorted, token-budgeted batches
  (:func:`~virnucpro.pipeline.batching.pack_batches` with :func:`packing_options`);
- batches are queued on the device one ahead: while one computes the next is queued, and only
  then does the loop wait for the earlier one and copy its rows into the result (the copy to the
  host is asynchronous, :class:`~virnucpro.models.embedders.PendingEmbedding`);
- a CUDA out-of-memory error on a batch of several sequences waits for the batches in flight,
  empties the allocator's cache, splits the batch in halves and lowers the budget
  (:func:`~virnucpro.pipeline.budget.halved_budget`) for the rest of this and later calls; a
  single sequence that does not fit is an error.

:meth:`EmbeddingRunner.submit` returns once every batch is queued, with at most the last one
still computing; :meth:`PendingEmbeddings.result` waits for it. A worker calls ``result`` on its
finishing thread while it starts the next shard, so the GPU never waits for the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from virnucpro.pipeline.batching import is_uniform, pack_batches, padded_tokens
from virnucpro.pipeline.budget import halved_budget
from virnucpro.pipeline.encode_ahead import encode_ahead

__all__ = [
    "DNABERT_ENCODE_GROUP",
    "EmbeddingCounts",
    "Embeddings",
    "PendingEmbeddings",
    "EmbeddingRunner",
    "packing_options",
    "encode_group",
]

logger = logging.getLogger(__name__)

_UNIFORM_FRACTION = 0.25
"""A run of equal-length sequences filling this share of a batch is closed off as its own batch:
it then needs no attention mask (SDPA's flash kernel)."""
_MAX_PADDING = 0.05
"""A batch is closed before it would become more than 5% padding (DNABERT-S lengths spread)."""
DNABERT_ENCODE_GROUP = 2048
"""DNABERT-S sequences are tokenised this many at a time, one group ahead of the GPU."""


def packing_options(embedder: Any) -> dict[str, Any]:
    """``pack_batches`` options: padded batches avoid padding; packed batches have none."""
    if getattr(embedder, "packed", False):
        return {}
    return {"uniform_fraction": _UNIFORM_FRACTION, "max_padding": _MAX_PADDING}


def encode_group(embedder: Any) -> int | None:
    """Sequences per tokenising group: :data:`DNABERT_ENCODE_GROUP` for an embedder with a
    tokenizer (DNABERT-S's BPE costs about as much CPU as the GPU spends), else None (at once)."""
    return DNABERT_ENCODE_GROUP if hasattr(embedder, "tokenizer") else None


@dataclass(frozen=True, slots=True)
class EmbeddingCounts:
    """What one call embedded: ``padded_tokens`` counts what the device computed (packed batches
    compute no padding); ``oom_retries`` the batches halved after running out of memory."""

    frames: int
    tokens: int
    padded_tokens: int
    batches: int
    uniform_batches: int
    oom_retries: int


@dataclass(frozen=True, slots=True)
class Embeddings:
    """``matrix[i]`` (fp32, ``[N, dim]``) embeds input sequence *i* of ``lengths[i]`` tokens."""

    matrix: np.ndarray
    lengths: tuple[int, ...]
    counts: EmbeddingCounts


class PendingEmbeddings:
    """The batches of one :meth:`EmbeddingRunner.submit` call; :meth:`result` waits for them."""

    def __init__(self, n: int, dim: int, on_batch: Callable[[int, int], None] | None = None) -> None:
        # NaN until written: a row the loop missed fails the caller's finite check
        self._matrix = np.full((n, dim), np.nan, dtype=np.float32)
        self._in_flight: list[tuple[list[int], Any, int]] = []
        self._on_batch = on_batch
        self._lengths: tuple[int, ...] = ()
        self._counts = EmbeddingCounts(frames=n, tokens=0, padded_tokens=0, batches=0,
                                       uniform_batches=0, oom_retries=0)

    def _add(self, batch: list[int], handle: Any, tokens: int) -> None:
        self._in_flight.append((batch, handle, tokens))
        if len(self._in_flight) > 1:  # the next batch is queued: now wait for the previous one
            self._collect()

    def _collect(self) -> None:
        batch, handle, tokens = self._in_flight.pop(0)
        self._matrix[batch] = handle.result().numpy()
        if self._on_batch is not None:
            self._on_batch(len(batch), tokens)

    def _drain(self) -> None:
        while self._in_flight:
            self._collect()

    def _close(self, lengths: list[int], counts: EmbeddingCounts) -> None:
        self._lengths = tuple(lengths)
        self._counts = counts

    def result(self) -> Embeddings:
        """Wait for the batches still computing; the embeddings in input order."""
        self._drain()
        return Embeddings(self._matrix, self._lengths, self._counts)


class EmbeddingRunner:
    """Embeds lists of sequences with one embedder (``encode``, ``submit``, ``dim``, ``device``,
    ``packed``) under a token budget that out-of-memory errors lower for every later call.

    ``encode_group``: sequences per tokenising group; None uses :func:`encode_group`.
    ``label`` names the caller in log messages (a worker's name).
    """

    def __init__(self, embedder: Any, budget: int, *, encode_group: int | None = None,
                 label: str = "embedding") -> None:
        if budget < 1:
            raise ValueError("the token budget must be at least 1")
        self.embedder = embedder
        self.budget = budget
        self.encode_group = encode_group
        self.label = label

    def embed(self, sequences: Sequence[str]) -> Embeddings:
        """:meth:`submit`, then wait."""
        return self.submit(sequences).result()

    def submit(
        self, sequences: Sequence[str], on_batch: Callable[[int, int], None] | None = None
    ) -> PendingEmbeddings:
        """Queue every batch of ``sequences``; returns with at most the last batch computing.
        ``on_batch(frames, tokens)`` is called as each batch's embeddings arrive."""
        import torch

        embedder = self.embedder
        n = len(sequences)
        pending = PendingEmbeddings(n, embedder.dim, on_batch)
        group = encode_group(embedder) if self.encode_group is None else self.encode_group
        groups = encode_ahead(sequences, embedder.encode, group)  # tokenised once, a group ahead
        encoded: list[Any] = [None] * n
        lengths = [0] * n
        queue: list[list[int]] = []
        padded = batches = uniform = oom_retries = 0
        while True:
            if not queue:
                next_group = next(groups, None)
                if next_group is None:
                    break
                indices, tokens = next_group
                for i, row in zip(indices, tokens):
                    encoded[i] = row
                    lengths[i] = len(row)
                local = [len(row) for row in tokens]
                packing = pack_batches(local, self.budget, **packing_options(embedder))
                queue = [[indices[j] for j in b] for b in packing]
            batch = queue.pop(0)
            size = padded_tokens(lengths, batch)
            try:
                handle = embedder.submit([encoded[i] for i in batch])
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                pending._drain()
                oom_retries += 1
                if embedder.device.type == "cuda":
                    torch.cuda.empty_cache()
                half = len(batch) // 2
                queue[:0] = [batch[:half], batch[half:]]
                self.budget = halved_budget(size)
                logger.warning(
                    "%s: out of memory on a batch of %d tokens; halving and retrying",
                    self.label,
                    size,
                )
                continue
            packed = getattr(embedder, "packed", False)  # after submit: a failed packed call pads
            padded += sum(lengths[i] for i in batch) if packed else size
            batches += 1
            uniform += is_uniform(lengths, batch)
            pending._add(batch, handle, sum(lengths[i] for i in batch))
        counts = EmbeddingCounts(
            frames=n, tokens=sum(lengths), padded_tokens=padded, batches=batches,
            uniform_batches=uniform, oom_retries=oom_retries,
        )  # fmt: skip
        pending._close(lengths, counts)
        return pending
