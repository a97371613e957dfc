"""PersistentWorkerPool: one spawned worker process per device, models resident for its life.

Shaped like Prefect's ``TaskRunner`` contract but knowing nothing of Prefect: ``submit`` returns a
``concurrent.futures.Future``; the pool is a context manager; ``close()`` ends every process even
when a stage raised.

- The parent sets ``CUDA_VISIBLE_DEVICES`` (and the expandable-segments allocator) in each child's
  environment before starting it; the parent never initialises CUDA.
- A dispatcher thread keeps up to ``tasks_per_worker`` tasks (default 2) with each worker — the
  one it computes and the next, so the worker goes on to the next shard while it finishes the last
  one's feature file — watches results and process deaths through
  ``multiprocessing.connection.wait``, replaces a dead worker (same device) and retries its tasks;
  a task that fails ``max_attempts`` times fails its future with a
  :class:`~virnucpro.errors.WorkerError` naming the shard's frame IDs.
- Each worker has its own pipes, so a SIGKILLed worker cannot corrupt another's channel.
- A task that failed on a disk error (full, read-only, permission; the worker reports the
  errno) is not retried: its future fails with a :class:`~virnucpro.errors.DiskError` at once.
- Closed while a ``KeyboardInterrupt`` (Ctrl-C, or ``Terminated`` for SIGTERM) or another
  ``BaseException`` propagates, the pool ends its workers at once instead of letting each
  finish its shard; a killed worker's partial feature file is removed.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from virnucpro.domain.atomic import remove_stale_temps
from virnucpro.domain.disk import DISK_ERRNOS
from virnucpro.errors import DiskError, ModelLoadError, WorkerError
from virnucpro.pipeline.compile_cache import compile_cache_env
from virnucpro.pipeline.devices import WorkerDevice
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
from virnucpro.pipeline.shards import iter_shard_ids
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.worker import worker_main

__all__ = ["PersistentWorkerPool", "WorkerInfo", "ALLOCATOR_CONF"]

logger = logging.getLogger(__name__)

ALLOCATOR_CONF = "expandable_segments:True"
_ENV_LOCK = threading.Lock()


@dataclass(slots=True)
class WorkerInfo:
    """What the parent knows of one worker slot (a device); ``generation`` counts replacements."""

    name: str
    device: WorkerDevice
    generation: int = 0
    pid: int | None = None
    ready: WorkerReady | None = None
    model_loads: dict[str, int] = field(default_factory=dict)
    total_model_loads: dict[str, int] = field(default_factory=lambda: {"dnabert": 0, "esm": 0})
    peak_mib: float = 0.0
    tasks_done: int = 0
    restarts: int = 0
    start_seconds: float = 0.0  # spawn -> ready, the last start
    start_phases: dict[str, float] = field(default_factory=dict)  # where start_seconds went


@dataclass(slots=True)
class _Job:
    task: EmbedTask
    future: Future
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    frames_done: int = 0  # batches of the current attempt computed so far (progress only)
    tokens_done: int = 0


class _Slot:
    """One live worker process and its two pipes."""

    def __init__(self, info: WorkerInfo, process: Any, task_conn: Any, result_conn: Any) -> None:
        self.info = info
        self.process = process
        self.task_conn = task_conn
        self.result_conn = result_conn
        self.ready = False
        self.spawned = time.perf_counter()
        self.jobs: dict[int, _Job] = {}  # task id -> job, in the order they were sent
        self.stage_reply: StageEnded | None = None


class PersistentWorkerPool:
    """One worker process per device, models loaded once and kept until :meth:`close`."""

    def __init__(
        self,
        devices: list[WorkerDevice],
        spec: WorkerSpec,
        *,
        max_attempts: int = 3,
        start_timeout: float = 900.0,
        tasks_per_worker: int = 2,
        warm_first_only: bool = False,
    ) -> None:
        """``warm_first_only``: a worker is ready when its models are read and the first stage's
        is warm; it warms the others beside that stage (the run's own start, see
        :func:`~virnucpro.pipeline.worker.worker_main`)."""
        if not devices:
            raise ValueError("a pool needs at least one device")
        if tasks_per_worker < 1:
            raise ValueError("tasks_per_worker must be at least 1")
        self.tasks_per_worker = tasks_per_worker
        self.warm_first_only = warm_first_only
        self.devices = list(devices)
        self.spec = spec
        self.max_attempts = max_attempts
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot] = []
        self._infos: list[WorkerInfo] = [
            WorkerInfo(name=d.name, device=d) for d in self.devices
        ]
        self._pending: collections.deque[_Job] = collections.deque()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._closed = False
        self._started = False
        self._stage_msg: StageEnd | None = None
        # submit() wakes the dispatcher at once instead of at its next poll timeout
        self._wake_recv, self._wake_send = mp.Pipe(duplex=False)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "PersistentWorkerPool":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def workers(self) -> list[WorkerInfo]:
        return list(self._infos)

    @property
    def is_running(self) -> bool:
        """Started, not closed, and its dispatcher healthy (a fatal error makes it unusable)."""
        return self._started and not self._closed and self._fatal is None

    def start(self) -> "PersistentWorkerPool":
        """Start every worker and wait until each has loaded its models."""
        if self._started:
            return self
        if self._closed:
            raise RuntimeError("this pool was closed; create a new one")
        self._started = True
        try:
            self._slots = [self._spawn(info) for info in self._infos]
            deadline = time.monotonic() + self.start_timeout
            while not all(s.ready for s in self._slots):
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"workers did not finish loading models within {self.start_timeout:.0f} s"
                    )
                self._poll(0.2, starting=True)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._dispatch, name="virnucpro-pool", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, info: WorkerInfo) -> _Slot:
        task_recv, task_send = self._ctx.Pipe(duplex=False)
        result_recv, result_send = self._ctx.Pipe(duplex=False)
        info.generation += 1
        name = info.name
        process = self._ctx.Process(
            target=worker_main,
            args=(name, self.spec, _ConnQueue(task_recv), _ConnQueue(result_send), self.warm_first_only),
            name=f"virnucpro-worker-{name}",
            daemon=True,
        )
        with _ENV_LOCK:  # the child copies os.environ at start(); set it for this child only
            child_env = {
                # a CPU worker gets an empty list: it can never touch a GPU by accident
                "CUDA_VISIBLE_DEVICES": info.device.cuda_visible_devices or "",
                "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR_CONF,
                **compile_cache_env(),  # compiled kernels kept across processes (user's setting wins)
            }
            saved = {k: os.environ.get(k) for k in child_env}
            try:
                os.environ.update(child_env)
                process.start()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        task_recv.close()
        result_send.close()
        info.pid = process.pid
        logger.info("started worker %s (pid %s, generation %d)", name, process.pid, info.generation)
        return _Slot(info, process, task_send, result_recv)

    def close(self) -> None:
        """Stop every worker and release its memory; safe to call twice and after errors.

        Normally each worker finishes the shards it holds. Called while a ``BaseException`` that
        is not an ``Exception`` propagates (Ctrl-C, SIGTERM, exit), it ends them at once.
        """
        if self._closed:
            return
        self._closed = True
        interrupted = _interrupt_in_flight()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if not interrupted:
            for slot in self._slots:
                with contextlib.suppress(OSError, ValueError):  # a dead worker's pipe is already gone
                    slot.task_conn.send(None)
        deadline = time.monotonic() + (0 if interrupted else 20)
        for slot in self._slots:
            slot.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
            _close_conns(slot)
        with self._lock:
            jobs = list(self._pending) + [j for s in self._slots for j in s.jobs.values()]
            self._pending.clear()
        for slot in self._slots:
            _remove_partial_files(slot.jobs.values())
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(WorkerError("the worker pool was closed before this shard ran"))
        for conn in (self._wake_send, self._wake_recv):
            conn.close()

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process.pid is not None]

    # -- work ---------------------------------------------------------------------------------
    def submit(self, stage: FeatureStage, shard_path: Path, out_path: Path) -> Future:
        """Queue one shard for one stage; the future resolves to a :class:`TaskDone`."""
        if not self.is_running:
            raise RuntimeError("the pool is not running; use it as a context manager or call start()")
        if self._fatal is not None:
            raise self._fatal
        future: Future = Future()
        task = EmbedTask(next(self._ids), stage, Path(shard_path), Path(out_path))
        with self._lock:
            self._pending.append(_Job(task, future))
        with contextlib.suppress(OSError):  # closed meanwhile: close() fails the future
            self._wake_send.send_bytes(b"!")
        return future

    def in_flight_progress(self) -> tuple[int, int]:
        """Frames and tokens already computed in shards that are not finished yet (batches the
        workers reported), for progress inside a shard."""
        with self._lock:
            jobs = [j for s in self._slots for j in s.jobs.values()]
            return sum(j.frames_done for j in jobs), sum(j.tokens_done for j in jobs)

    def cancel_pending(self) -> int:
        """Drop queued (not yet running) tasks, cancelling their futures; returns how many."""
        with self._lock:
            jobs = list(self._pending)
            self._pending.clear()
        for job in jobs:
            job.future.cancel()
        return len(jobs)

    def end_stage(self, stage: FeatureStage, release: bool, timeout: float = 300.0) -> list[StageEnded]:
        """Tell every worker a stage ended (empty_cache; ``release`` unloads its model too).

        Call only when no task of the stage is in flight.
        """
        with self._lock:
            self._stage_msg = StageEnd(stage, release)
            for slot in self._slots:
                slot.stage_reply = None
                slot.task_conn.send(self._stage_msg)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                replies = [s.stage_reply for s in self._slots]
            if all(r is not None for r in replies):
                self._stage_msg = None
                return [r for r in replies if r is not None]
            if self._fatal is not None:
                raise self._fatal
            if time.monotonic() > deadline:
                raise WorkerError(f"workers did not acknowledge the end of the {stage.label} stage")
            time.sleep(0.02)

    # -- the dispatcher -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                self._assign()
                self._poll(0.05)
            except BaseException as exc:  # never die silently: fail every future
                logger.exception("worker pool dispatcher failed")
                self._fatal = exc if isinstance(exc, Exception) else WorkerError(str(exc))
                with self._lock:
                    jobs = list(self._pending) + [j for s in self._slots for j in s.jobs.values()]
                    self._pending.clear()
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(self._fatal)
                return

    def _assign(self) -> None:
        """Top every live worker up to ``tasks_per_worker``: idle workers first, then a second
        task each, so shards spread over all GPUs before any worker queues two."""
        with self._lock:
            for depth in range(1, self.tasks_per_worker + 1):
                for slot in self._slots:
                    if not self._pending:
                        return
                    if slot.ready and len(slot.jobs) < depth and slot.process.is_alive():
                        job = self._pending.popleft()
                        job.attempts += 1
                        slot.jobs[job.task.task_id] = job
                        slot.task_conn.send(job.task)

    def _poll(self, timeout: float, starting: bool = False) -> None:
        conns = {s.result_conn: s for s in self._slots}
        sentinels = {s.process.sentinel: s for s in self._slots}
        for ready in wait([*conns, *sentinels, self._wake_recv], timeout=timeout):
            if ready is self._wake_recv:
                with contextlib.suppress(OSError, EOFError):
                    while self._wake_recv.poll():
                        self._wake_recv.recv_bytes()
            elif ready in conns:
                slot = conns[ready]
                try:
                    message = ready.recv()
                except (EOFError, OSError):
                    continue  # the sentinel reports the death
                self._handle(slot, message, starting)
        for slot in list(self._slots):
            if not slot.process.is_alive():
                # drain what the worker sent before dying
                with contextlib.suppress(EOFError, OSError):  # a message cut by the death is lost
                    while slot.result_conn.poll():
                        self._handle(slot, slot.result_conn.recv(), starting)
                if not slot.process.is_alive() and not self._closed:
                    self._replace(slot, starting)

    def _handle(self, slot: _Slot, message: Any, starting: bool) -> None:
        info = slot.info
        if isinstance(message, WorkerReady):
            slot.ready = True
            info.ready = message
            info.start_seconds = time.perf_counter() - slot.spawned
            # the rest of the start: the process, its imports (torch), CUDA's initialisation
            info.start_phases = {"process + imports": round(info.start_seconds - message.load_seconds, 3),
                                 **message.phases}
            info.pid = message.pid
            for key in message.loaded:
                info.total_model_loads[key] = info.total_model_loads.get(key, 0) + 1
                info.model_loads[key] = info.model_loads.get(key, 0) + 1
        elif isinstance(message, ModelWarm):
            info.start_phases.update(message.phases)
            logger.info("worker %s: %s warmed up in %.1f s, after its start (beside the first stage)",
                        info.name, message.stage, message.phases.get(f"{message.stage} warm-up", 0.0))
        elif isinstance(message, WorkerFatal):
            raise _fatal_error(message)  # the dispatcher fails every pending future with it
        elif isinstance(message, BatchDone):
            with self._lock:
                running = slot.jobs.get(message.task_id)
                if running is not None:
                    running.frames_done += message.n_frames
                    running.tokens_done += message.n_tokens
        elif isinstance(message, TaskDone):
            with self._lock:
                job = slot.jobs.pop(message.task_id, None)
            self._note_loads(info, message.model_loads)
            info.peak_mib = max(info.peak_mib, message.peak_mib)
            info.tasks_done += 1
            if job is not None and not job.future.done():
                job.future.set_result(message)
        elif isinstance(message, TaskFailed):
            with self._lock:
                job = slot.jobs.pop(message.task_id, None)
            if job is not None and message.errno in DISK_ERRNOS:  # retrying cannot help
                job.future.set_exception(DiskError(message.error, message.errno))
            elif job is not None:
                self._retry_or_fail(job, f"{info.name}: {message.error}")
        elif isinstance(message, StageEnded):
            self._note_loads(info, message.model_loads)
            info.peak_mib = max(info.peak_mib, message.peak_mib)
            with self._lock:
                slot.stage_reply = message

    @staticmethod
    def _note_loads(info: WorkerInfo, loads: dict[str, int]) -> None:
        for key, count in loads.items():
            before = info.model_loads.get(key, 0)
            if count > before:
                info.total_model_loads[key] = info.total_model_loads.get(key, 0) + count - before
            info.model_loads[key] = count

    def _retry_or_fail(self, job: _Job, error: str) -> None:
        job.errors.append(error)
        job.frames_done = job.tokens_done = 0  # a retry starts the shard again
        if job.attempts >= self.max_attempts:
            ids = list(iter_shard_ids(job.task.shard_path))
            shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
            job.future.set_exception(
                WorkerError(
                    f"{job.task.stage.label} failed {job.attempts} times on shard "
                    f"{job.task.shard_path.name} (frames {shown}); last error: {job.errors[-1]}"
                )
            )
            return
        logger.warning("retrying %s (attempt %d): %s", job.task.shard_path.name, job.attempts + 1, error)
        with self._lock:
            self._pending.appendleft(job)

    def _replace(self, slot: _Slot, starting: bool) -> None:
        code = slot.process.exitcode
        info = slot.info
        logger.warning("worker %s (pid %s) died with exit code %s; replacing it", info.name, slot.process.pid, code)
        with self._lock:
            jobs, slot.jobs = list(slot.jobs.values()), {}
            index = self._slots.index(slot)
        _close_conns(slot)
        _remove_partial_files(jobs)
        info.restarts += 1
        if info.restarts > self.max_attempts * max(1, len(self._infos)) + 3:
            raise WorkerError(f"worker {info.name} keeps dying (exit code {code}); giving up")
        info.model_loads = {}
        new_slot = self._spawn(info)
        with self._lock:
            self._slots[index] = new_slot
            if self._stage_msg is not None and slot.stage_reply is None:
                new_slot.task_conn.send(self._stage_msg)  # it dies mid-boundary: ask the new one
            else:
                new_slot.stage_reply = slot.stage_reply
        for job in reversed(jobs):  # retried first, in their original order
            self._retry_or_fail(job, f"{info.name}: worker died (exit code {code})")


class _ConnQueue:
    """A queue-like face over one end of a Pipe (``get`` for readers, ``put`` for writers)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def get(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            return None

    def waiting(self) -> bool:
        """Something can be read now (a message, or the end of the pipe)."""
        try:
            return self.conn.poll()
        except (EOFError, OSError):
            return True

    def put(self, item: Any) -> None:
        self.conn.send(item)


def _interrupt_in_flight() -> bool:
    """True when called while a KeyboardInterrupt, SystemExit or the like propagates."""
    exc = sys.exc_info()[1]
    return exc is not None and not isinstance(exc, Exception)


def _remove_partial_files(jobs: Any) -> None:
    """Remove the temporary feature files a dead worker left for ``jobs``."""
    for job in jobs:
        remove_stale_temps(job.task.out_path)


def _close_conns(slot: _Slot) -> None:
    """Close a slot's two pipe ends; one already closed by a dying worker is fine."""
    for conn in (slot.task_conn, slot.result_conn):
        with contextlib.suppress(OSError):
            conn.close()


def _fatal_error(message: WorkerFatal) -> Exception:
    if message.error_type in {"ModelLoadError", "ModelNotFoundError"}:
        return ModelLoadError(message.error)
    return WorkerError(f"worker {message.worker} could not start: {message.error_type}: {message.error}")
