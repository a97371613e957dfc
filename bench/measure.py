"""Timing and arithmetic of the benchmark: FLOP counts, runs of the workers' embedding loop, rate rows."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["esm_flops", "dnabert_flops", "sync", "run_embedder", "rate_row", "cosine_rows", "gc_time"]


def esm_flops(lengths: list[int], layers: int, dim: int) -> float:
    """Useful FLOPs of ESM-2 over sequences of ``lengths`` tokens (padding not counted).

    Linear layers: 2 · 12·D² per token per layer (q, k, v, out: 4·D²; FFN 4×: 8·D²); attention:
    4·T·D per token per layer (QKᵀ and PV). Embedding, norms and element-wise work not counted.
    """
    tokens = sum(lengths)
    squares = sum(t * t for t in lengths)
    return layers * (2 * 12 * dim * dim * tokens + 4 * dim * squares)


def dnabert_flops(lengths: list[int], layers: int, hidden: int, intermediate: int) -> float:
    """Useful FLOPs of DNABERT-S: Wqkv 3H², dense H², GEGLU 2·I·H + I·H per token; attention 4·T·H."""
    per_token = 3 * hidden * hidden + hidden * hidden + 3 * intermediate * hidden
    tokens = sum(lengths)
    squares = sum(t * t for t in lengths)
    return layers * (2 * per_token * tokens + 4 * hidden * squares)


def sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def gc_time() -> Iterator[dict[str, float]]:
    """Seconds the garbage collector ran (and full collections) inside the block: the thread
    that feeds the GPU stands still meanwhile."""
    spent = {"gc_s": 0.0, "gc_full": 0}
    began = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            spent["gc_s"] += time.perf_counter() - began[0]
            spent["gc_full"] += info.get("generation") == 2

    gc.callbacks.append(callback)
    try:
        yield spent
    finally:
        gc.callbacks.remove(callback)


def run_embedder(embedder: Any, seqs: list[str], budget: int, shard_frames: int,
                 drain_each_shard: bool = False) -> tuple[Any, dict[str, Any]]:
    """Embed as a worker does: shards of ``shard_frames`` in order, each through the workers'
    embedding loop (:class:`virnucpro.pipeline.embedding.EmbeddingRunner`: tokenising a group
    ahead, packing, one batch computing while the next is queued, out-of-memory halving; the
    tokenising is inside the timing), the budget carried from shard to shard as in a worker.

    A worker hands a shard's last batches to its finishing thread and starts on the next shard
    (tokenises, packs, queues it) while the GPU still runs them; so here too each shard's result
    is collected on a finishing thread. ``drain_each_shard`` (a variant no worker runs) waits for
    every batch of a shard before the next is tokenised (the emulation of runs A–E in
    docs/benchmarks.md: the GPU idles meanwhile)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np

    from virnucpro.pipeline.embedding import EmbeddingRunner

    runner = EmbeddingRunner(embedder, budget)
    device = embedder.device
    finished: list[Future] = []
    sync(device)
    finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
    with gc_time() as spent, finisher:
        started = time.perf_counter()
        for lo in range(0, len(seqs), shard_frames):
            pending = runner.submit(seqs[lo : lo + shard_frames])
            if drain_each_shard:
                pending.result()  # wait here, before the next shard is tokenised
            finished.append(finisher.submit(pending.result))  # as a worker's finishing thread
        shards = [f.result() for f in finished]
        sync(device)
        seconds = time.perf_counter() - started
    counts = [s.counts for s in shards]
    dim = embedder.dim
    out = np.concatenate([s.matrix for s in shards]) if shards else np.zeros((0, dim), np.float32)
    return out, {
        "seconds": seconds,
        "gc_s": round(spent["gc_s"], 3),
        "gc_full": spent["gc_full"],
        "sequences": len(seqs),
        "tokens": sum(c.tokens for c in counts),
        "padded_tokens": sum(c.padded_tokens for c in counts),
        "batches": sum(c.batches for c in counts),
        "uniform_batches": sum(c.uniform_batches for c in counts),
        "oom_retries": sum(c.oom_retries for c in counts),
        "lengths": [n for s in shards for n in s.lengths],
    }


def rate_row(name: str, stats: dict[str, Any], flops: float | None, peak_tflops: float | None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    s = stats["seconds"]
    row = {
        "name": name,
        "seconds": round(s, 3),
        "sequences": stats["sequences"],
        "tokens": stats["tokens"],
        "padding_share": round(1 - stats["tokens"] / max(1, stats["padded_tokens"]), 4),
        "batches": stats["batches"],
        "uniform_batches": stats["uniform_batches"],
        "tokens_per_s": stats["tokens"] / s if s else None,
        "frames_per_s": stats["sequences"] / s if s else None,
        "tflops": flops / s / 1e12 if flops and s else None,
        "pct_peak": 100 * flops / s / 1e12 / peak_tflops if flops and s and peak_tflops else None,
        "gc_s": stats.get("gc_s"),
    }
    if stats.get("oom_retries"):  # batches halved after running out of memory, as a worker does
        row["oom_retries"] = stats["oom_retries"]
    row.update(extra or {})
    return row


def cosine_rows(a: Any, b: Any) -> Any:
    import numpy as np

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
