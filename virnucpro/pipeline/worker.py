"""The worker process: loads models, embeds shards, writes feature files.

Started by :class:`~virnucpro.pipeline.persistent_pool.PersistentWorkerPool` with the ``spawn``
context; the parent has already set ``CUDA_VISIBLE_DEVICES`` (one GPU, seen here as ``cuda:0``)
and ``PYTORCH_CUDA_ALLOC_CONF`` in this process's environment.

Testing knob: ``VIRNUCPRO_FAULTS`` (JSON) makes a worker fail on purpose, to exercise the
recovery paths for real: ``{"kill_marker": PATH}`` SIGKILLs the worker at its next task while
PATH exists (deleting PATH first, so the replacement survives); ``{"oom_above_tokens": N}``
raises a genuine ``torch.OutOfMemoryError`` for any batch over N padded tokens;
``{"fail_frame": ID}`` makes every shard holding frame ID fail; ``{"disk_full": true}`` makes
every feature write fail with ``ENOSPC``, as on a full disk.

The worker ignores SIGINT: a Ctrl-C reaches the whole process group, and the parent, which
handles it, ends the workers (no traceback from each of them). SIGTERM ends a worker at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virnucpro.config import Precision
from virnucpro.domain.disk import disk_error
from virnucpro.errors import DiskError
from virnucpro.pipeline.budget import batch_budget, warmup_tokens
from virnucpro.pipeline.embedding import EmbeddingRunner
from virnucpro.pipeline.heap import freeze_heap, settle_heap
from virnucpro.pipeline.memory import process_peak_rss_mib, reset_process_peak_rss
from virnucpro.pipeline.messages import (
    BatchDone,
    EmbedTask,
    ModelWarm,
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

__all__ = ["worker_main", "task_failed"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Faults:
    kill_marker: Path | None = None
    oom_above_tokens: int | None = None
    fail_frame: str | None = None
    disk_full: bool = False
    nonfinite_frame: str | None = None  # that frame's embedding comes out NaN (below fp32)
    batch_delay_s: float = 0.0  # each batch takes at least this long (progress inside a shard)

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
            disk_full=bool(data.get("disk_full", False)),
            nonfinite_frame=data.get("nonfinite_frame"),
            batch_delay_s=float(data.get("batch_delay_s", 0.0)),
        )

    def wrap(self, embedder: Any) -> Any:
        """The embedder, or one that runs out of memory above ``oom_above_tokens``."""
        if self.oom_above_tokens is None:
            return embedder
        return _OomAbove(embedder, self.oom_above_tokens)


class _OomAbove:
    """An embedder whose ``submit`` raises a genuine ``torch.OutOfMemoryError`` for any batch over
    ``limit`` padded tokens (the ``oom_above_tokens`` fault); everything else is the embedder's."""

    def __init__(self, embedder: Any, limit: int) -> None:
        self._embedder = embedder
        self._limit = limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def submit(self, rows: Any) -> Any:
        import torch

        size = max(len(r) for r in rows) * len(rows) if rows else 0
        if size > self._limit:
            raise torch.OutOfMemoryError(f"injected OOM: batch of {size} tokens > {self._limit}")
        return self._embedder.submit(rows)


class _Worker:
    def __init__(self, name: str, spec: WorkerSpec, results: Any, *, collect_at_stage_end: bool = False) -> None:
        """``collect_at_stage_end``: a model's warm-up freezes the heap without collecting it
        (:func:`~virnucpro.pipeline.heap.freeze_heap`), and the collection runs after the next
        stage's end, in the next task's first finished batch, while its next batch computes: a
        GPU worker of a run's own start, whose warm-ups and stage ends are on the run's
        critical path. A stage end with no batch since the last one collects at once."""
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
        self._cold: dict[FeatureStage, tuple[Any, float, float]] = {}  # read, not warmed: (embedder, started, read)
        self.runners: dict[FeatureStage, EmbeddingRunner] = {}  # its token budget, once per stage
        self.fp32_runners: dict[FeatureStage, EmbeddingRunner] = {}  # loaded on a non-finite row
        self.model_loads: dict[str, int] = {"dnabert": 0, "esm": 0}
        self.load_seconds: dict[str, float] = {}
        self.compile_seconds: dict[str, float] = {}
        self.warmup_steps: dict[str, dict[str, float]] = {}  # per model: each warm-up step's seconds
        self.collect_at_stage_end = collect_at_stage_end
        self.collection_due = False  # frozen uncollected since a warm-up
        self.collect_in_next_batch = False  # a stage ended since: collected in the next batch's callback
        self._collect_lock = threading.Lock()
        if spec.on_gpu:
            torch.cuda.set_device(self.device)

    # -- models -------------------------------------------------------------------------------
    def load(self, stage: FeatureStage) -> Any:
        """Load ``stage``'s model once per process; on a GPU also compile it (once) right away.

        Compilation (``torch.compile`` of one layer, reused by every layer, dynamic batch and
        length) is triggered here by a warm-up batch, so it is paid at load time, once per
        worker, and never inside a stage; later shards, stages and samples reuse it. A model
        read but not yet warmed up (:meth:`load_all` with ``warm_first_only``) is warmed here.
        """
        if stage in self.embedders:
            return self.embedders[stage]
        if stage in self._cold:
            self.warm_cold(stage)
            return self.embedders[stage]
        started = time.perf_counter()
        return self._warm(stage, self._build(stage), started, time.perf_counter())

    def load_all(self, stages: tuple[FeatureStage, ...], *, warm_first_only: bool = False) -> None:
        """Load several models at once: their files are read and their weights converted and
        copied concurrently (one thread each); each model is warmed up (and compiled) in this
        thread as soon as its weights are on the device, while the others are still read
        (DNABERT-S's 0.4 GB are read long before ESM-2's 5.7 GB). ``torch.compile`` is called
        lazily, at the warm-up, so no thread but this one ever compiles.

        ``warm_first_only``: only ``stages[0]`` is warmed up now; the others are read (so an
        unreadable file still fails the start) and kept cold for :meth:`warm_cold`, which the
        worker calls while it has no task waiting (the run's first stage goes on meanwhile)."""
        todo = [s for s in dict.fromkeys(stages) if s not in self.embedders]
        if len(todo) < 2:
            for stage in todo:
                self.load(stage)
            return
        started = time.perf_counter()
        if self.spec.on_gpu:
            from virnucpro.models.kernels.triton_support import prefetch_cache_key

            prefetch_cache_key()  # Triton's ~0.5 s hash of itself, beside the reads, not in the warm-up
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="load") as pool:
            futures = {pool.submit(self._build_timed, stage): stage for stage in todo}
            for future in as_completed(futures):  # a failed read raises here, the others finish
                embedder, loaded = future.result()
                stage = futures[future]
                if warm_first_only and stage is not todo[0]:
                    self._cold[stage] = (embedder, started, loaded)
                    self.model_loads[stage.value] += 1
                    self.load_seconds[stage.value] = loaded - started
                else:
                    self._warm(stage, embedder, started, loaded)

    @property
    def cold(self) -> tuple[FeatureStage, ...]:
        """Models read onto the device but not warmed up yet."""
        return tuple(self._cold)

    def warm_cold(self, stage: FeatureStage | None = None) -> None:
        """Warm up ``stage``'s cold model (None: the first one) and tell the parent."""
        stage = stage if stage is not None else next(iter(self._cold))
        embedder, started, loaded = self._cold.pop(stage)
        self._warm(stage, embedder, started, loaded, counted=True)  # counted when it was read
        steps = self.warmup_steps.get(stage.value, {})
        self.send(ModelWarm(worker=self.name, stage=stage.value, phases={
            f"{stage.value} read": round(self.load_seconds[stage.value], 3),
            f"{stage.value} warm-up": round(self.compile_seconds[stage.value], 3),
            **{f"{stage.value} warm-up: {step}": v for step, v in steps.items()}}))

    def _build_timed(self, stage: FeatureStage) -> tuple[Any, float]:
        if self.spec.on_gpu:
            self.torch.cuda.set_device(self.device)  # per thread
        embedder = self._build(stage)
        return embedder, time.perf_counter()

    def _build(self, stage: FeatureStage) -> Any:
        from virnucpro.models.embedders import load_dnabert_embedder, load_esm2_embedder

        compile_flag = True if self.spec.compile_models else None  # None: default per dtype
        if stage is FeatureStage.DNABERT:
            return load_dnabert_embedder(
                self.spec.dnabert_path, self.device, self.precision, compile=compile_flag
            )
        return load_esm2_embedder(self.spec.esm_path, self.device, self.precision, compile=compile_flag)

    def _warm(self, stage: FeatureStage, embedder: Any, started: float, loaded: float,
              counted: bool = False) -> Any:
        warm_started = time.perf_counter()
        runner = getattr(embedder, "runner", None)
        if runner is not None and runner.layer.enabled:
            self.warmup_steps[stage.value] = embedder.warmup(
                warmup_tokens(self.device, embedder.dim, self.precision, self.spec.toks_per_batch)
            )
            if self.spec.on_gpu:
                self.torch.cuda.synchronize(self.device)
        self.embedders[stage] = embedder
        if self.collect_at_stage_end:
            freeze_heap()  # collected at the stage's end, while the parent plans the next one
            self.collection_due = True
        else:
            settle_heap()  # a full collection in a stage would stall the GPU queue (see heap.py)
        if not counted:
            self.model_loads[stage.value] += 1
        self.load_seconds[stage.value] = loaded - started
        self.compile_seconds[stage.value] = time.perf_counter() - warm_started
        logger.info(
            "%s: loaded %s in %.1f s (+%.1f s warm-up/compile)", self.name, stage.label,
            loaded - started, self.compile_seconds[stage.value],
        )
        return embedder

    def collect_heap(self, when: str) -> None:
        """Collect what the warm-ups froze uncollected (once)."""
        with self._collect_lock:
            if not self.collection_due:
                return
            started = time.perf_counter()
            settle_heap(released=True)
            self.collection_due = self.collect_in_next_batch = False
        logger.debug("%s: heap collected %s in %.2f s", self.name, when, time.perf_counter() - started)

    def release(self, stage: FeatureStage) -> None:
        self.embedders.pop(stage, None)
        self.runners.pop(stage, None)
        self.fp32_runners.pop(stage, None)
        with self._collect_lock:
            settle_heap(released=True)  # unfreezes first: the released model's objects are collected
            self.collection_due = self.collect_in_next_batch = False
        self._empty_cache()

    def _empty_cache(self) -> None:
        if self.spec.on_gpu:
            self.torch.cuda.empty_cache()

    def runner(self, stage: FeatureStage, embedder: Any) -> EmbeddingRunner:
        """The stage's embedding loop; its token budget is read once (after loading) and lowered
        by out-of-memory errors for the stage's later shards."""
        if stage not in self.runners:
            spec = self.spec
            budget = batch_budget(self.device, embedder.dim, self.precision, spec.toks_per_batch)
            self.runners[stage] = EmbeddingRunner(
                self.faults.wrap(embedder), budget, label=self.name
            )
        return self.runners[stage]

    # -- work ---------------------------------------------------------------------------------
    def peak_mib(self) -> float:
        """GPU: torch's CUDA peak; CPU: the process's peak RSS (both reset at each stage end)."""
        if not self.spec.on_gpu:
            return process_peak_rss_mib()
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
                self.send(task_failed(self.name, task, exc))
                return
            self.send(done)

        self._finishing = [f for f in self._finishing if not f.done()]
        self._finishing.append(self._finisher.submit(run))

    def embed_task(self, task: EmbedTask) -> None:
        """Embed one shard. Its GPU work is queued here; the rest (waiting for the last batches,
        writing the feature file atomically, reporting ``TaskDone``) runs on the finishing thread
        while this thread starts the next task."""
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
        def batch_done(n_frames: int, n_tokens: int) -> None:  # progress inside a shard
            if self.faults.batch_delay_s:
                time.sleep(self.faults.batch_delay_s)
            if self.collect_in_next_batch:  # the next batch is queued: the GPU works meanwhile
                self.collect_heap(f"in a {task.stage} batch after the stage's end")
            self.send(BatchDone(worker=self.name, task_id=task.task_id, n_frames=n_frames,
                                n_tokens=n_tokens))

        pending = self.runner(task.stage, embedder).submit(seqs, on_batch=batch_done)  # all queued

        def finish() -> TaskDone:
            embedded = pending.result()
            ids = [f.frame_id for f in frames]
            matrix = embedded.matrix
            if self.faults.nonfinite_frame in ids and self.precision is not Precision.FP32:
                matrix[ids.index(self.faults.nonfinite_frame)] = float("nan")
            recomputed = self._recompute_in_fp32(task.stage, ids, seqs, matrix)
            bad = nonfinite_rows(ids, matrix)
            if bad:
                raise FloatingPointError(
                    f"non-finite {task.stage.label} embeddings for {len(bad)} frame(s): "
                    f"{', '.join(bad[:5])}"
                )
            if self.faults.disk_full:
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected)")
            save_features(task.out_path, ids, matrix)
            counts = embedded.counts
            return TaskDone(
                worker=self.name,
                task_id=task.task_id,
                n_frames=len(frames),
                n_tokens=counts.tokens,
                padded_tokens=counts.padded_tokens,
                seconds=time.perf_counter() - started,
                peak_mib=self.peak_mib(),
                oom_retries=counts.oom_retries,
                model_loads=dict(self.model_loads),
                fp32_recomputed=recomputed,
            )

        self._finish_later(task, finish)

    def _recompute_in_fp32(self, stage: FeatureStage, ids: list[str], seqs: list[str], matrix: Any) -> int:
        """Rows that came out non-finite below fp32 (an fp16 overflow) computed again by the
        stage's model in fp32, the original's arithmetic; returns how many. In fp32 there is
        nothing to fall back to: the caller's check fails the shard."""
        if self.precision is Precision.FP32:
            return 0
        bad = [ids.index(frame_id) for frame_id in nonfinite_rows(ids, matrix)]
        if not bad:
            return 0
        logger.warning("%s: %d %s embedding(s) non-finite in %s (e.g. %s); computing them in fp32",
                       self.name, len(bad), stage.label, self.precision.value, ids[bad[0]])
        if stage not in self.fp32_runners:
            from virnucpro.models.embedders import load_dnabert_embedder, load_esm2_embedder

            load = load_dnabert_embedder if stage is FeatureStage.DNABERT else load_esm2_embedder
            path = self.spec.dnabert_path if stage is FeatureStage.DNABERT else self.spec.esm_path
            embedder = load(path, self.device, Precision.FP32, compile=False)
            budget = batch_budget(self.device, embedder.dim, Precision.FP32, self.spec.toks_per_batch)
            self.fp32_runners[stage] = EmbeddingRunner(embedder, budget, label=f"{self.name}-fp32")
        again = self.fp32_runners[stage].embed([seqs[i] for i in bad]).matrix
        for row, i in enumerate(bad):
            matrix[i] = again[row]
        return len(bad)

    def end_stage(self, message: StageEnd) -> StageEnded:
        self.drain()
        peak = self.peak_mib()
        if message.release:
            self.release(message.stage)  # collects too
        else:
            if self.collection_due and self.collect_in_next_batch:  # no batch ran since the last end
                self.collect_heap(f"at the {message.stage} stage's end")
            elif self.collection_due:
                self.collect_in_next_batch = True  # the parent goes on at once (see __init__)
            self._empty_cache()
        allocated = reserved = 0.0
        if self.spec.on_gpu:
            allocated = self.torch.cuda.memory_allocated(self.device) / 2**20
            reserved = self.torch.cuda.memory_reserved(self.device) / 2**20
            self.torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_process_peak_rss()
        return StageEnded(
            worker=self.name,
            stage=message.stage,
            peak_mib=peak,
            allocated_mib=allocated,
            reserved_mib=reserved,
            model_loads=dict(self.model_loads),
        )


def task_failed(worker: str, task: EmbedTask, exc: Exception) -> TaskFailed:
    """The report of a failed task; a disk error carries its errno (the parent does not retry)."""
    if isinstance(exc, OSError):
        exc = disk_error(exc, task.out_path) or exc
    if isinstance(exc, DiskError):
        return TaskFailed(worker=worker, task_id=task.task_id, error=str(exc), errno=exc.errno)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return TaskFailed(worker=worker, task_id=task.task_id, error=detail)


def _exit_at_once() -> None:
    """End the process now that its work is done: every result is sent (the pipes are
    synchronous) and every feature file written and fsync-ed (``drain``). The interpreter's and
    CUDA's teardown (about a second with 16 GB of models on a GPU, while the run waits) is skipped;
    the driver frees the process's device memory when it ends."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def worker_main(name: str, spec: WorkerSpec, tasks: Any, results: Any, warm_first_only: bool = False) -> None:
    """Process entry point: load, then serve tasks until ``None`` arrives.

    ``warm_first_only``: ready once every model is read and the first stage's is warmed up; the
    others warm up when no task waits after the first one (while the first stage's last batches
    compute and the parent ends that stage), or at their stage's first task. Otherwise every
    model is warm when the worker says it is ready."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the workers
    logging.basicConfig(level=os.environ.get("VIRNUCPRO_WORKER_LOG_LEVEL", "WARNING"))
    try:
        worker = _Worker(name, spec, results, collect_at_stage_end=warm_first_only and spec.on_gpu)
        started = time.perf_counter()
        worker.load_all(tuple(spec.preload), warm_first_only=warm_first_only)
        device_name = "cpu"
        if spec.on_gpu:
            device_name = worker.torch.cuda.get_device_name(worker.device)
        worker.send(
            WorkerReady(
                worker=name,
                pid=os.getpid(),
                loaded=tuple(s.value for s in (*worker.embedders, *worker.cold)),
                load_seconds=time.perf_counter() - started,
                allocator_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                device_name=device_name,
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                phases={**{f"{k} read": round(v, 3) for k, v in worker.load_seconds.items()},
                        **{f"{k} warm-up": round(v, 3) for k, v in worker.compile_seconds.items()},
                        **{f"{k} warm-up: {step}": v for k, steps in worker.warmup_steps.items()
                           for step, v in steps.items()}},
            )
        )
    except Exception as exc:  # model files unreadable, CUDA unusable...
        results.put(WorkerFatal(worker=name, error=str(exc), error_type=type(exc).__name__))
        return
    served = False  # a cold model is warmed once the first task ran, never before it
    while True:
        if worker.cold and served and not tasks.waiting():
            try:
                worker.warm_cold()
            except Exception as exc:  # as a failed warm-up at the start: the pool fails with it
                results.put(WorkerFatal(worker=name, error=str(exc), error_type=type(exc).__name__))
                return
            continue
        message = tasks.get()
        served = True
        if message is None:
            worker.drain()
            _exit_at_once()
        if isinstance(message, StageEnd):
            worker.send(worker.end_stage(message))
            continue
        try:
            worker.embed_task(message)
        except Exception as exc:
            worker.send(task_failed(name, message, exc))
