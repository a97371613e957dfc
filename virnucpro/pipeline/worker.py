"""The worker process: loads models, embeds shards, writes feature files.

Started by :class:`~virnucpro.pipeline.persistent_pool.PersistentWorkerPool` with the ``spawn``
context; the parent has already set ``CUDA_VISIBLE_DEVICES`` (one GPU, seen here as ``cuda:0``)
and ``PYTORCH_CUDA_ALLOC_CONF`` in this process's environment.

Testing knob: ``VIRNUCPRO_FAULTS`` (JSON) makes a worker fail on purpose, to exercise the
recovery paths for real: ``{"kill_marker": PATH}`` SIGKILLs the worker at its next task while
PATH exists (deleting PATH first, so the replacement survives); ``{"oom_above_tokens": N}``
raises a genuine ``torch.OutOfMemoryError`` for any batch over N padded tokens;
``{"fail_frame": ID}`` makes every shard holding frame ID fail.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virnucpro.pipeline.batching import pack_batches, padded_tokens
from virnucpro.pipeline.encode_ahead import encode_ahead
from virnucpro.pipeline.heap import settle_heap
from virnucpro.pipeline.messages import (
    BatchDone,
    EmbedTask,
    StageEnd,
    StageEnded,
    TaskDone,
    TaskFailed,
    WorkerFatal,
    WorkerReady,
    WorkerSpec,
)
from virnucpro.pipeline.shards import nonfinite_rows, read_shard, save_features
from virnucpro.pipeline.stage import FeatureStage

__all__ = ["worker_main", "token_budget"]

logger = logging.getLogger(__name__)

_CPU_TOKEN_BUDGET = 4096
_MIN_TOKEN_BUDGET = 256
_MAX_GPU_TOKEN_BUDGET = 131072
_UNIFORM_FRACTION = 0.25
"""A run of equal-length sequences filling this share of a batch is closed off as its own batch:
it then needs no attention mask (SDPA's flash kernel)."""
_WARMUP_TOKENS = 65536
_MAX_PADDING = 0.05
"""A batch is closed before it would become more than 5% padding (DNABERT-S lengths spread)."""
DNABERT_ENCODE_GROUP = 2048
"""DNABERT-S shards are tokenised this many sequences at a time, one group ahead of the GPU
(:mod:`~virnucpro.pipeline.encode_ahead`); ESM-2's encoding is a table lookup, done at once."""


def packing_options(embedder: Any) -> dict[str, Any]:
    """``pack_batches`` options: padded batches avoid padding; packed batches have none."""
    if getattr(embedder, "packed", False):
        return {}
    return {"uniform_fraction": _UNIFORM_FRACTION, "max_padding": _MAX_PADDING}


@dataclass(slots=True)
class _Faults:
    kill_marker: Path | None = None
    oom_above_tokens: int | None = None
    fail_frame: str | None = None

    @classmethod
    def from_env(cls) -> "_Faults":
        raw = os.environ.get("VIRNUCPRO_FAULTS")
        if not raw:
            return cls()
        data = json.loads(raw)
        marker = data.get("kill_marker")
        return cls(
            kill_marker=Path(marker) if marker else None,
            oom_above_tokens=data.get("oom_above_tokens"),
            fail_frame=data.get("fail_frame"),
        )


def token_budget(free_bytes: int, dim: int, elem_bytes: int) -> int:
    """Padded tokens per batch that fit in ``free_bytes`` with room to spare.

    Inference keeps about one layer's activations alive: the residual stream, q/k/v, attention
    output and the 4x feed-forward hidden state, ~24 values of width ``dim`` per token. Half of the
    free memory is used; an out-of-memory error still halves the batch and retries.
    """
    per_token = max(1, dim * 24 * elem_bytes)
    budget = int(free_bytes * 0.5 // per_token)
    return max(_MIN_TOKEN_BUDGET, min(_MAX_GPU_TOKEN_BUDGET, budget))


class _Worker:
    def __init__(self, name: str, spec: WorkerSpec, results: Any) -> None:
        import torch

        self.torch = torch
        self.name = name
        self.spec = spec
        self.results = results
        self._send_lock = threading.Lock()
        # Each task's tail (its last batches, the feature file, the report) is finished here, so
        # the GPU starts the next task (the pool keeps one queued per worker) without waiting.
        self._finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        self._finishing: list[Future] = []
        self.faults = _Faults.from_env()
        self.precision = spec.precision
        self.device = torch.device("cuda:0" if spec.on_gpu else "cpu")
        self.embedders: dict[FeatureStage, Any] = {}
        self.budgets: dict[FeatureStage, int] = {}
        self.model_loads: dict[str, int] = {"dnabert": 0, "esm": 0}
        self.load_seconds: dict[str, float] = {}
        self.compile_seconds: dict[str, float] = {}
        if spec.on_gpu:
            torch.cuda.set_device(self.device)

    # -- models -------------------------------------------------------------------------------
    def load(self, stage: FeatureStage) -> Any:
        """Load ``stage``'s model once per process; on a GPU also compile it (once) right away.

        Compilation (``torch.compile`` of one layer, reused by every layer, dynamic batch and
        length) is triggered here by a warm-up batch, so it is paid at load time, once per
        worker, and never inside a stage; later shards, stages and samples reuse it.
        """
        if stage in self.embedders:
            return self.embedders[stage]
        from virnucpro.models.embedders import load_dnabert_embedder, load_esm2_embedder

        started = time.perf_counter()
        compile_flag = True if self.spec.compile_models else None  # None: default per dtype
        if stage is FeatureStage.DNABERT:
            embedder = load_dnabert_embedder(
                self.spec.dnabert_path, self.device, self.precision, compile=compile_flag
            )
        else:
            embedder = load_esm2_embedder(
                self.spec.esm_path, self.device, self.precision, compile=compile_flag
            )
        loaded = time.perf_counter()
        runner = getattr(embedder, "runner", None)
        if runner is not None and runner.layer.enabled:
            embedder.warmup(self._warmup_tokens(embedder))
            if self.spec.on_gpu:
                self.torch.cuda.synchronize(self.device)
        self.embedders[stage] = embedder
        settle_heap()  # a full collection in a stage would stall the GPU queue (see heap.py)
        self.model_loads[stage.value] += 1
        self.load_seconds[stage.value] = loaded - started
        self.compile_seconds[stage.value] = time.perf_counter() - loaded
        logger.info(
            "%s: loaded %s in %.1f s (+%.1f s warm-up/compile)", self.name, stage.label,
            loaded - started, time.perf_counter() - loaded,
        )
        return embedder

    def _warmup_tokens(self, embedder: Any) -> int:
        """Warm-up batch size: realistic (kernels are tuned on it), at most 64k tokens."""
        if self.spec.toks_per_batch:
            return min(self.spec.toks_per_batch, _WARMUP_TOKENS)
        if not self.spec.on_gpu:
            return 512
        free, _total = self.torch.cuda.mem_get_info(self.device)
        elem = self.precision.bytes_per_element
        return min(token_budget(free, embedder.dim, elem), _WARMUP_TOKENS)

    def release(self, stage: FeatureStage) -> None:
        self.embedders.pop(stage, None)
        self.budgets.pop(stage, None)
        settle_heap()  # unfreezes first: the released model's objects are collected
        self._empty_cache()

    def _empty_cache(self) -> None:
        if self.spec.on_gpu:
            self.torch.cuda.empty_cache()

    def budget(self, stage: FeatureStage, embedder: Any) -> int:
        if stage in self.budgets:
            return self.budgets[stage]
        if self.spec.toks_per_batch:
            budget = self.spec.toks_per_batch
        elif self.spec.on_gpu:
            free, _total = self.torch.cuda.mem_get_info(self.device)
            elem = self.precision.bytes_per_element
            budget = token_budget(free, embedder.dim, elem)
        else:
            budget = _CPU_TOKEN_BUDGET
        self.budgets[stage] = budget
        return budget

    # -- work ---------------------------------------------------------------------------------
    def peak_mib(self) -> float:
        if not self.spec.on_gpu:
            return 0.0
        return self.torch.cuda.max_memory_allocated(self.device) / 2**20

    def send(self, message: Any) -> None:
        """Send a result to the parent (from the main or the finishing thread)."""
        with self._send_lock:
            self.results.put(message)

    def drain(self) -> None:
        """Wait until every task handed to the finishing thread has reported."""
        while self._finishing:
            self._finishing.pop(0).result()

    def _finish_later(self, task: EmbedTask, finish: Callable[[], TaskDone]) -> None:
        def run() -> None:
            try:
                done = finish()
            except Exception as exc:  # a feature file that cannot be written fails its task
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self.send(TaskFailed(worker=self.name, task_id=task.task_id, error=detail))
                return
            self.send(done)

        self._finishing = [f for f in self._finishing if not f.done()]
        self._finishing.append(self._finisher.submit(run))

    def embed_task(self, task: EmbedTask) -> None:
        """Embed one shard. Its GPU work is queued here; the rest (waiting for the last batches,
        writing the feature file atomically, reporting ``TaskDone``) runs on the finishing thread
        while this thread starts the next task."""
        torch = self.torch
        if self.faults.kill_marker is not None and self.faults.kill_marker.exists():
            self.faults.kill_marker.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        started = time.perf_counter()
        frames = read_shard(task.shard_path)
        if self.faults.fail_frame is not None and any(
            f.frame_id == self.faults.fail_frame for f in frames
        ):
            raise RuntimeError(f"injected failure for frame {self.faults.fail_frame}")
        embedder = self.load(task.stage)
        seqs = [f.dna if task.stage is FeatureStage.DNABERT else f.protein for f in frames]
        group = DNABERT_ENCODE_GROUP if task.stage is FeatureStage.DNABERT else None
        groups = encode_ahead(seqs, embedder.encode, group)  # tokenised once, a group ahead
        encoded: list[Any] = [None] * len(seqs)
        lengths = [0] * len(seqs)
        budget = self.budget(task.stage, embedder)
        rows: list[Any] = [None] * len(seqs)
        oom_retries = 0
        padded = 0
        pending: list[list[int]] = []
        in_flight: list[tuple[list[int], Any]] = []  # at most one batch computing on the GPU

        def collect() -> None:
            batch, handle = in_flight.pop(0)
            emb = handle.result()
            for row, i in enumerate(batch):
                rows[i] = emb[row]
            self.send(BatchDone(worker=self.name, task_id=task.task_id, n_frames=len(batch),
                                n_tokens=sum(lengths[i] for i in batch)))

        while True:
            if not pending:
                next_group = next(groups, None)
                if next_group is None:
                    break
                indices, tokens = next_group
                for i, row in zip(indices, tokens):
                    encoded[i] = row
                    lengths[i] = len(row)
                local = [len(row) for row in tokens]
                options = packing_options(embedder)
                pending = [[indices[j] for j in b] for b in pack_batches(local, budget, **options)]
            batch = pending.pop(0)
            size = padded_tokens(lengths, batch)
            try:
                if self.faults.oom_above_tokens is not None and size > self.faults.oom_above_tokens:
                    raise torch.OutOfMemoryError(
                        f"injected OOM: batch of {size} tokens > {self.faults.oom_above_tokens}"
                    )
                handle = embedder.submit([encoded[i] for i in batch])
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                while in_flight:
                    collect()
                oom_retries += 1
                self._empty_cache()
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                budget = max(_MIN_TOKEN_BUDGET, size // 2)
                self.budgets[task.stage] = budget
                logger.warning(
                    "%s: out of memory on a batch of %d tokens; halving and retrying",
                    self.name,
                    size,
                )
                continue
            padded += sum(lengths[i] for i in batch) if getattr(embedder, "packed", False) else size
            in_flight.append((batch, handle))
            if len(in_flight) > 1:  # the next batch is queued: now wait for the previous one
                collect()

        def finish() -> TaskDone:
            while in_flight:
                collect()
            if rows:
                matrix = torch.stack(rows).numpy()
            else:
                import numpy as np

                matrix = np.zeros((0, embedder.dim), dtype=np.float32)
            ids = [f.frame_id for f in frames]
            bad = nonfinite_rows(ids, matrix)
            if bad:
                raise FloatingPointError(
                    f"non-finite {task.stage.label} embeddings for {len(bad)} frame(s): "
                    f"{', '.join(bad[:5])}"
                )
            save_features(task.out_path, ids, matrix)
            return TaskDone(
                worker=self.name,
                task_id=task.task_id,
                n_frames=len(frames),
                n_tokens=int(sum(lengths)),
                padded_tokens=padded,
                seconds=time.perf_counter() - started,
                peak_mib=self.peak_mib(),
                oom_retries=oom_retries,
                model_loads=dict(self.model_loads),
            )

        self._finish_later(task, finish)

    def end_stage(self, message: StageEnd) -> StageEnded:
        self.drain()
        peak = self.peak_mib()
        if message.release:
            self.release(message.stage)
        else:
            self._empty_cache()
        allocated = reserved = 0.0
        if self.spec.on_gpu:
            allocated = self.torch.cuda.memory_allocated(self.device) / 2**20
            reserved = self.torch.cuda.memory_reserved(self.device) / 2**20
            self.torch.cuda.reset_peak_memory_stats(self.device)
        return StageEnded(
            worker=self.name,
            stage=message.stage,
            peak_mib=peak,
            allocated_mib=allocated,
            reserved_mib=reserved,
            model_loads=dict(self.model_loads),
        )


def worker_main(name: str, spec: WorkerSpec, tasks: Any, results: Any) -> None:
    """Process entry point: load, then serve tasks until ``None`` arrives."""
    logging.basicConfig(level=os.environ.get("VIRNUCPRO_WORKER_LOG_LEVEL", "WARNING"))
    try:
        worker = _Worker(name, spec, results)
        started = time.perf_counter()
        for stage in spec.preload:
            worker.load(stage)
        device_name = "cpu"
        if spec.on_gpu:
            device_name = worker.torch.cuda.get_device_name(worker.device)
        worker.send(
            WorkerReady(
                worker=name,
                pid=os.getpid(),
                loaded=tuple(s.value for s in worker.embedders),
                load_seconds=time.perf_counter() - started,
                allocator_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                device_name=device_name,
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        )
    except Exception as exc:  # model files unreadable, CUDA unusable...
        results.put(WorkerFatal(worker=name, error=str(exc), error_type=type(exc).__name__))
        return
    while True:
        message = tasks.get()
        if message is None:
            worker.drain()
            break
        if isinstance(message, StageEnd):
            worker.send(worker.end_stage(message))
            continue
        try:
            worker.embed_task(message)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            worker.send(TaskFailed(worker=name, task_id=message.task_id, error=detail))
