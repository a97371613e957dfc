"""Timing and arithmetic of the benchmark: FLOP counts, worker-style embedding runs, rate rows."""

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
    """Embed like a worker: shards of ``shard_frames`` in order, each tokenised as a worker
    tokenises it (:mod:`virnucpro.pipeline.encode_ahead`; tokenisation is inside the timing),
    batched as a worker batches, one batch computing while the next is queued.

    A worker hands a shard's last batches to its finishing thread and starts on the next shard
    (reads, tokenises, packs it) while the GPU still runs them; so here too the queue carries
    over from one shard to the next. ``drain_each_shard`` waits for every batch at the end of
    each shard instead (the emulation of runs A–E in docs/benchmarks.md: the GPU idles while the
    next shard is tokenised)."""
    import numpy as np

    from virnucpro.pipeline.batching import is_uniform, pack_batches, padded_tokens
    from virnucpro.pipeline.encode_ahead import encode_ahead
    from virnucpro.pipeline.worker import DNABERT_ENCODE_GROUP, packing_options

    group = DNABERT_ENCODE_GROUP if hasattr(embedder, "tokenizer") else None  # as the worker

    out = np.zeros((len(seqs), embedder.dim), dtype=np.float32)
    lengths_all: list[int] = []
    padded = batches = uniform = 0
    device = embedder.device
    sync(device)
    with gc_time() as spent:
        started = time.perf_counter()
        in_flight: list[tuple[list[int], Any]] = []
        for lo in range(0, len(seqs), shard_frames):
            shard = seqs[lo : lo + shard_frames]
            for indices, rows in encode_ahead(shard, embedder.encode, group):
                lengths = [len(r) for r in rows]
                lengths_all.extend(lengths)
                for batch in pack_batches(lengths, budget, **packing_options(embedder)):
                    if getattr(embedder, "packed", False):
                        padded += sum(lengths[i] for i in batch)  # packed: no padding is computed
                    else:
                        padded += padded_tokens(lengths, batch)
                    batches += 1
                    uniform += is_uniform(lengths, batch)
                    handle = embedder.submit([rows[i] for i in batch])
                    in_flight.append(([lo + indices[i] for i in batch], handle))
                    if len(in_flight) > 1:
                        done, handle = in_flight.pop(0)
                        out[done] = handle.result().numpy()
            while drain_each_shard and in_flight:
                done, handle = in_flight.pop(0)
                out[done] = handle.result().numpy()
        for done, handle in in_flight:
            out[done] = handle.result().numpy()
        sync(device)
        seconds = time.perf_counter() - started
    return out, {
        "seconds": seconds,
        "gc_s": round(spent["gc_s"], 3),
        "gc_full": spent["gc_full"],
        "sequences": len(seqs),
        "tokens": sum(lengths_all),
        "padded_tokens": padded,
        "batches": batches,
        "uniform_batches": uniform,
        "lengths": lengths_all,
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
    row.update(extra or {})
    return row


def cosine_rows(a: Any, b: Any) -> Any:
    import numpy as np

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
