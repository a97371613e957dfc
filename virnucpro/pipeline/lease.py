"""PoolLease: the one owner of a worker pool's life. Nothing else starts or closes a pool.

A run asks its lease for a pool per feature stage (:meth:`PoolLease.stage_pool`); the lease decides
what that means:

- **owned** (``persistent_models``): the lease starts ONE pool with both models resident the first
  time a stage asks, hands the same pool to every later stage, and closes it in :meth:`close`. At a
  stage boundary the workers only empty the CUDA cache.
- **lent**: a view of another (owned) lease, e.g. the night's pool lent to each sample's run. It
  uses the owner's pool and never closes it; the owner does, when the night ends.
- **per stage** (the original's behaviour): each stage starts workers that load only its model and
  closes them (releasing the model and its GPU memory) when the stage ends.

A stage that fails on a pool (a worker died past its retries, a fatal load error) discards that
pool: the next stage or a retry starts fresh workers. The CLI, the Prefect task runner and the
nightly flow all hold a lease; none of them touches :class:`PersistentWorkerPool` directly.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.messages import StageEnded, WorkerSpec
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool, WorkerInfo
from virnucpro.pipeline.stage import FEATURE_STAGES, FeatureStage

__all__ = ["LeaseMode", "PoolLease", "StagePool"]

logger = logging.getLogger(__name__)


class LeaseMode(enum.Enum):
    OWNED = "owned"
    LENT = "lent"
    PER_STAGE = "per-stage"


@dataclass(slots=True)
class StagePool:
    """The pool one stage runs on, how long starting it took, and the workers' end-of-stage replies."""

    pool: PersistentWorkerPool
    start_seconds: float
    ended: list[StageEnded] = field(default_factory=list)


class PoolLease:
    """Who starts and closes worker pools for a run (or a night). Thread-safe."""

    def __init__(self, mode: LeaseMode, owner: "PoolLease | None" = None) -> None:
        if (mode is LeaseMode.LENT) != (owner is not None):
            raise ValueError("a lent lease needs exactly one owner; other leases have none")
        if owner is not None and owner.mode is not LeaseMode.OWNED:
            raise ValueError("only an owned lease can be lent")
        self.mode = mode
        self._owner = owner
        self._pool: PersistentWorkerPool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._closing: threading.Thread | None = None  # close_beside's thread, joined by close
        self.pools_opened = 0
        self._workers: list[WorkerInfo] = []  # every worker this lease's pools had, for reports

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def owned(cls) -> "PoolLease":
        return cls(LeaseMode.OWNED)

    @classmethod
    def per_stage(cls) -> "PoolLease":
        return cls(LeaseMode.PER_STAGE)

    @classmethod
    def for_run(cls, persistent_models: bool) -> "PoolLease":
        """Owned when models stay resident, else per stage."""
        return cls.owned() if persistent_models else cls.per_stage()

    def lend(self) -> "PoolLease":
        """A lent view of this (owned) lease: same pool, never closes it."""
        return PoolLease(LeaseMode.LENT, owner=self)

    # -- what callers ask ---------------------------------------------------------------------
    @property
    def persistent(self) -> bool:
        """Models stay resident across stages (owned or lent)."""
        return self.mode is not LeaseMode.PER_STAGE

    @property
    def pool(self) -> PersistentWorkerPool | None:
        """The resident pool, if one is running now (None in per-stage mode)."""
        if self._owner is not None:
            return self._owner.pool
        pool = self._pool
        return pool if pool is not None and pool.is_running else None

    def model_loads(self) -> dict[str, dict[str, int]]:
        """Model loads per worker over every pool this lease (or its owner) opened."""
        if self._owner is not None:
            return self._owner.model_loads()
        loads: dict[str, dict[str, int]] = {}
        for info in self._workers:
            total = loads.setdefault(info.name, {})
            for model, n in info.total_model_loads.items():
                total[model] = total.get(model, 0) + n
        return loads

    def start(self, devices: list[WorkerDevice], spec: WorkerSpec, *, first_stage_ready: bool = False) -> float:
        """Start the resident pool now (before any stage asks), e.g. while the input is prepared
        or before a timed section; returns the seconds it took (0 when already running).

        ``first_stage_ready``: return once the workers can run the first stage (every model
        read, the first one warmed up); they warm the others up beside that stage. A run's own
        start does this; a pool started ahead of a timed section is wholly warm."""
        if not self.persistent:
            raise RuntimeError("a per-stage lease starts workers per stage; there is no pool to start")
        if self._owner is not None:
            return self._owner.start(devices, spec, first_stage_ready=first_stage_ready)
        return self._acquire(devices, spec, FEATURE_STAGES[0], first_stage_ready).start_seconds

    @contextmanager
    def stage_pool(
        self, devices: list[WorkerDevice], spec: WorkerSpec, stage: FeatureStage
    ) -> Iterator[StagePool]:
        """A pool for one stage; on success the stage is ended as the mode says, on failure the
        pool is discarded (the next request starts fresh workers)."""
        if self._owner is not None:
            with self._owner.stage_pool(devices, spec, stage) as lent:
                yield lent
            return
        handle = self._acquire(devices, spec, stage)
        try:
            yield handle
            handle.ended = handle.pool.end_stage(stage, release=not self.persistent)
        except BaseException:
            self._discard(handle.pool)
            raise
        if not self.persistent:
            handle.pool.close()

    def close_beside(self) -> None:
        """The holder asks for no more stages: start closing the owned pool now, in a thread, so
        its workers end beside the holder's CPU steps (classify, report); :meth:`close` waits for
        it. Only the one who made the lease may call this (a run that holds its own lease, not a
        flow run's or a night's, which lend their pool to later samples). A lent or per-stage
        lease has nothing to close; a second call does nothing."""
        if self._owner is not None or not self.persistent:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            self._closing = threading.Thread(target=self._close_pool, args=(pool,), name="pool-close",
                                             daemon=True)
            self._closing.start()

    def close(self) -> None:
        """Close the pool this lease owns (a lent lease closes nothing), or wait for the closing
        :meth:`close_beside` began. Safe to call twice."""
        if self._owner is not None:
            return
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            closing, self._closing = self._closing, None
        if pool is not None:
            self._close_pool(pool)
        if closing is not None:
            closing.join()

    @staticmethod
    def _close_pool(pool: PersistentWorkerPool) -> None:
        started = time.perf_counter()
        pool.close()
        logger.info("stopped %d worker(s) in %.1f s", len(pool.workers), time.perf_counter() - started)

    def __enter__(self) -> "PoolLease":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PoolLease({self.mode.value}, pools_opened={self.pools_opened})"

    # -- the pool's life ----------------------------------------------------------------------
    def _acquire(self, devices: list[WorkerDevice], spec: WorkerSpec, stage: FeatureStage,
                 first_stage_ready: bool = False) -> StagePool:
        if not self.persistent:
            return self._start(devices, replace(spec, preload=(stage,)))
        with self._lock:
            if self._closed:
                raise RuntimeError("this lease was closed; its run or night has ended")
            pool = self._pool
            if pool is not None and pool.is_running:
                if pool.devices == list(devices) and replace(pool.spec, preload=()) == replace(spec, preload=()):
                    return StagePool(pool, 0.0)
                logger.warning("the resident worker pool was started with other settings; restarting it")
            if pool is not None:
                if not pool.is_running:
                    logger.warning("the resident worker pool broke; starting a new one")
                pool.close()
                self._pool = None
            handle = self._start(devices, replace(spec, preload=FEATURE_STAGES), first_stage_ready)
            self._pool = handle.pool
            return handle

    def _start(self, devices: list[WorkerDevice], spec: WorkerSpec, first_stage_ready: bool = False) -> StagePool:
        started = time.perf_counter()
        pool = PersistentWorkerPool(list(devices), spec, warm_first_only=first_stage_ready)
        self._workers.extend(pool.workers)
        pool.start()
        self.pools_opened += 1
        seconds = time.perf_counter() - started
        logger.info("started %d worker(s) (%s; %s) in %.1f s", len(pool.workers),
                    ", ".join(w.name for w in pool.workers),
                    "both models resident" if self.persistent else f"{spec.preload[0].label} only",
                    seconds)
        if first_stage_ready:
            logger.info("the workers can run %s now; they warm up %s beside it", spec.preload[0].label,
                        ", ".join(s.label for s in spec.preload[1:]))
        for worker in pool.workers:
            logger.info("worker %s start: %s", worker.name,
                        ", ".join(f"{k} {v:.1f} s" for k, v in worker.start_phases.items()))
        return StagePool(pool, seconds)

    def _discard(self, pool: PersistentWorkerPool) -> None:
        with self._lock:
            if pool is self._pool:
                self._pool = None
        pool.close()
