"""BatchQueueManager: hands a stage's shards to workers and collects results by frame ID.

``use_persistent_pool=True``: one :class:`PersistentWorkerPool` with BOTH models loaded serves
every stage (and every sample, when the caller passes its own ``pool``); at a stage boundary the
workers only empty the CUDA cache. ``False`` (the original's behaviour): each stage starts
workers that load only that stage's model and are shut down, releasing the model and its GPU
memory, when the stage ends.

Shards are submitted largest first and pulled by whichever worker is idle, so work is balanced by
token count, not by file count. Shards whose feature file is already complete are skipped
(resume). After a stage every shard's file is checked: one finite embedding per frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from pathlib import Path

from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.messages import StageEnded, TaskDone, WorkerSpec
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool
from virnucpro.pipeline.shards import Shard, check_feature_ids, features_complete, iter_shard_ids
from virnucpro.pipeline.stage import FeatureStage

__all__ = ["BatchQueueManager", "StageReport", "Progress", "feature_path"]

logger = logging.getLogger(__name__)


def feature_path(features_dir: Path, stage: FeatureStage, shard: Shard) -> Path:
    """The one place a shard's feature-file path is built."""
    return features_dir / stage.value / f"{shard.name}.npz"


@dataclass(frozen=True, slots=True)
class Progress:
    stage: FeatureStage
    shards_done: int
    shards_total: int
    frames_done: int
    tokens_done: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class StageReport:
    """What one feature stage did: counts, rates, memory, model loads, recoveries."""

    stage: FeatureStage
    persistent: bool
    shards_total: int
    shards_skipped: int
    frames: int
    tokens: int
    padded_tokens: int
    seconds: float
    worker_peak_mib: dict[str, float] = field(default_factory=dict)
    model_loads: dict[str, dict[str, int]] = field(default_factory=dict)
    worker_restarts: int = 0
    oom_retries: int = 0
    pool_start_seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class BatchQueueManager:
    """Runs feature stages over shards on a pool of workers (persistent or per stage)."""

    def __init__(
        self,
        devices: list[WorkerDevice],
        spec: WorkerSpec,
        *,
        use_persistent_pool: bool = False,
        pool: PersistentWorkerPool | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 10.0,
    ) -> None:
        self.devices = list(devices)
        self.spec = spec
        self.use_persistent_pool = use_persistent_pool
        self._pool = pool
        self._owns_pool = pool is None
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.stage_pools_started = 0

    # -- pools --------------------------------------------------------------------------------
    def _persistent_pool(self) -> tuple[PersistentWorkerPool, float]:
        if self._pool is not None:
            if not self._pool.is_running:
                self._pool.start()
            return self._pool, 0.0
        started = time.perf_counter()
        spec = replace(self.spec, preload=(FeatureStage.DNABERT, FeatureStage.ESM))
        self._pool = PersistentWorkerPool(self.devices, spec).start()
        self.stage_pools_started += 1
        return self._pool, time.perf_counter() - started

    @property
    def pool(self) -> PersistentWorkerPool | None:
        return self._pool

    def close(self) -> None:
        """Close the persistent pool if this manager created it."""
        if self._pool is not None and self._owns_pool:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "BatchQueueManager":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- a stage ------------------------------------------------------------------------------
    def run_stage(self, stage: FeatureStage, shards: list[Shard], features_dir: Path) -> StageReport:
        """Compute ``stage`` features for every shard not already on disk; verify all of them."""
        started = time.perf_counter()
        expected = {s.shard_id: list(iter_shard_ids(s.path)) for s in shards}
        todo = [s for s in shards if not features_complete(feature_path(features_dir, stage, s), expected[s.shard_id])]
        skipped = len(shards) - len(todo)
        if skipped:
            logger.info("%s: %d of %d shards already done; resuming", stage.label, skipped, len(shards))
        dones: list[TaskDone] = []
        ended: list[StageEnded] = []
        pool_start = 0.0
        restarts_before = 0
        pool = None
        if todo:
            if self.use_persistent_pool:
                pool, pool_start = self._persistent_pool()
            else:
                t0 = time.perf_counter()
                pool = PersistentWorkerPool(self.devices, replace(self.spec, preload=(stage,))).start()
                self.stage_pools_started += 1
                pool_start = time.perf_counter() - t0
            restarts_before = sum(w.restarts for w in pool.workers)
            try:
                dones = self._run_on(pool, stage, todo, features_dir, started)
                ended = pool.end_stage(stage, release=not self.use_persistent_pool)
            finally:
                if not self.use_persistent_pool:
                    pool.close()
        frames = tokens = 0
        for shard in shards:  # every frame in -> exactly one embedding out (finite: the worker checked)
            check_feature_ids(feature_path(features_dir, stage, shard), expected[shard.shard_id])
        for done in dones:
            frames += done.n_frames
            tokens += done.n_tokens
        peaks: dict[str, float] = {}
        loads: dict[str, dict[str, int]] = {}
        restarts = 0
        if pool is not None:
            for info in pool.workers:
                peaks[info.name] = info.peak_mib
                loads[info.name] = dict(info.total_model_loads)
            restarts = sum(w.restarts for w in pool.workers) - restarts_before
        for end in ended:
            peaks[end.worker] = max(peaks.get(end.worker, 0.0), end.peak_mib)
        report = StageReport(
            stage=stage,
            persistent=self.use_persistent_pool,
            shards_total=len(shards),
            shards_skipped=skipped,
            frames=frames,
            tokens=tokens,
            padded_tokens=sum(d.padded_tokens for d in dones),
            seconds=time.perf_counter() - started,
            worker_peak_mib=peaks,
            model_loads=loads,
            worker_restarts=restarts,
            oom_retries=sum(d.oom_retries for d in dones),
            pool_start_seconds=pool_start,
        )
        logger.info(
            "%s: %d frames, %d tokens in %.1f s (%.0f frames/s, %.0f tokens/s)",
            stage.label, report.frames, report.tokens, report.seconds,
            report.frames_per_s, report.tokens_per_s,
        )
        return report

    def _run_on(
        self,
        pool: PersistentWorkerPool,
        stage: FeatureStage,
        todo: list[Shard],
        features_dir: Path,
        started: float,
    ) -> list[TaskDone]:
        ordered = sorted(todo, key=lambda s: -s.n_tokens)  # largest first: balanced finish
        futures: dict[Future, Shard] = {
            pool.submit(stage, s.path, feature_path(features_dir, stage, s)): s for s in ordered
        }
        dones: list[TaskDone] = []
        remaining = set(futures)
        last_report = time.perf_counter()
        compute_started = time.perf_counter()
        while remaining:
            finished, remaining = wait_futures(remaining, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    dones.append(future.result())  # a WorkerError here fails the stage loudly
                except BaseException:
                    pool.cancel_pending()
                    for other in remaining:  # let running shards finish before the pool is reused
                        try:
                            other.result(timeout=600)
                        except Exception as exc:  # cancelled, or failed too: the first error wins
                            logger.debug("%s: shard abandoned after a failure: %r", stage.label, exc)
                    raise
            now = time.perf_counter()
            if now - last_report >= self.progress_interval or not remaining:
                last_report = now
                progress = Progress(
                    stage=stage,
                    shards_done=len(dones),
                    shards_total=len(todo),
                    frames_done=sum(d.n_frames for d in dones),
                    tokens_done=sum(d.n_tokens for d in dones),
                    seconds=now - compute_started,
                )
                logger.info(
                    "%s: %d/%d shards, %.0f frames/s, %.0f tokens/s",
                    stage.label, progress.shards_done, progress.shards_total,
                    progress.frames_per_s, progress.tokens_per_s,
                )
                if self.on_progress is not None:
                    self.on_progress(progress)
        return dones
