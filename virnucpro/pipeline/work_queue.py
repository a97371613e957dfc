"""BatchQueueManager: hands a stage's shards to workers and collects results by frame ID.

Which workers run a stage is the :class:`~virnucpro.pipeline.lease.PoolLease`'s business:
``use_persistent_pool=True`` gives the manager an owned lease (ONE pool with BOTH models loaded
serves every stage; at a stage boundary the workers only empty the CUDA cache); ``False`` (the
original's behaviour) a per-stage lease (each stage starts workers that load only its model and are
shut down, releasing the model and its GPU memory, when the stage ends). A caller that keeps a pool
across samples passes its own ``lease`` (e.g. a night's pool lent to each sample).

Shards are submitted in shard order and pulled by whichever worker is idle. Shard order, not
largest first: a duplicate's row comes from an earlier shard, so a shard's full feature file (and
its scores beside the ESM-2 stage) can be written only once every earlier shard it copies from is
complete. Computed out of order, those shards waited for the last one and were all expanded and
scored after the GPU was done (0.5 s of a 20,000-chunk run on an H200, run P2 in
``docs/benchmarks.md``); in order, only the last shard is. Shards hold the same number of frames,
the last one fewer, so the last work handed out is the smallest either way. Shards whose feature file is already complete are skipped
(resume). A frame whose model input (DNA, protein) an earlier frame of the run already has is not
computed again: the workers get each shard's first occurrences only, and its full feature file is
written from them (:mod:`~virnucpro.pipeline.dedupe`). Every shard's file is checked, one finite
embedding per frame: a computed shard's as it is written (beside the stage), the others' at the
stage's end. A stage's plan (:func:`plan_stage`) can be made before the stage, beside earlier steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline import dedupe
from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.embedding_cache import EmbeddingCache
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.messages import TaskDone, WorkerSpec
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool
from virnucpro.pipeline.shards import Shard, check_feature_ids, features_complete, iter_shard_ids
from virnucpro.pipeline.stage import FeatureStage

__all__ = ["BatchQueueManager", "StagePlan", "plan_stage", "StageReport", "Progress", "PHASES", "WORKER_PEAK_GPU", "WORKER_PEAK_CPU"]

logger = logging.getLogger(__name__)

WORKER_PEAK_GPU = "CUDA memory allocated by torch (peak)"
WORKER_PEAK_CPU = "worker process resident memory (peak RSS)"

PHASES = {
    "plan": "finding done shards and duplicates",
    "workers": "waiting for the workers' start",
    "stage_end": "ending the stage on the workers",
    "last_shards": "writing the last shards' duplicates' rows and scores",
    "finish": "checking the files",
}
"""The steps of a stage outside its embedding (``StageReport.phase_seconds``), in the closing line's words."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a stage is: shards finished, and frames/tokens computed (finished shards plus the
    batches of shards still running). ``seconds`` (and the rates) count from the first shard
    handed to a ready worker, so they leave out the workers' start and model loading (but not
    the rest of a warm-up that a run's own workers do beside its first stage, should the second
    stage's first shard arrive before it ends).
    ``frames_total`` counts the frames the stage computes (shards already on disk excluded)."""

    stage: FeatureStage
    shards_done: int
    shards_total: int
    frames_done: int
    tokens_done: int
    seconds: float
    frames_total: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction(self) -> float:
        """0..1; 1 when the stage had nothing to compute."""
        if self.frames_total <= 0:
            return 1.0 if self.shards_done >= self.shards_total else 0.0
        return min(1.0, self.frames_done / self.frames_total)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None before the first frames are done."""
        rate = self.frames_per_s
        if rate <= 0:
            return None
        return max(0, self.frames_total - self.frames_done) / rate

    def describe(self) -> str:
        """The progress line, in the words every entry point prints."""
        head = f"{self.stage.label}: {self.shards_done}/{self.shards_total} shards"
        if not self.frames_done:
            return f"{head}, 0 of {self.frames_total} frames after {self.seconds:.0f} s embedding"
        eta = self.eta_seconds
        left = f", {eta:.0f} s left" if eta is not None and self.frames_done < self.frames_total else ""
        return (f"{head}, {self.frames_done} frames in {self.seconds:.1f} s embedding "
                f"({self.frames_per_s:.0f} frames/s, {self.tokens_per_s:.0f} tokens/s), "
                f"{self.frames_done} of {self.frames_total} frames{left}")


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
    resumed: bool = False  # every shard was already done: these are the figures of the run that did it
    fp32_recomputed: int = 0  # frames non-finite at the run's precision, computed again in fp32
    embed_seconds: float = 0.0
    worker_peak_measure: str = ""
    duplicate_frames: int = 0  # frames not computed: an earlier frame of the run has the same input
    cache_hits: int = 0  # frames read from the embedding cache (--embedding-cache)
    cache_added: int = 0  # rows this stage added to the embedding cache
    phase_seconds: dict[str, float] = field(default_factory=dict)  # the stage's time outside embedding, by step (PHASES)
    shards_scored: int = 0  # shards the classifier scored beside the stage (the last one)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stage"] = self.stage.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "StageReport":
        return cls(**{**data, "stage": FeatureStage(data["stage"])})

    @property
    def frames_per_s(self) -> float:
        """Over the whole stage (``seconds``: the workers' start included)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Over the whole stage (``seconds``: the workers' start included)."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """The stage's closing line: each rate says which seconds it divides by."""
        if not self.frames and self.shards_skipped == self.shards_total:
            return f"{self.stage.label}: all {self.shards_total} shards were already done; nothing to embed"
        embed_frames = self.frames / self.embed_seconds if self.embed_seconds > 0 else 0.0
        embed_tokens = self.tokens / self.embed_seconds if self.embed_seconds > 0 else 0.0
        waiting = max(0.0, self.seconds - self.embed_seconds)
        steps = ", ".join(f"{PHASES[k]} {v:.1f} s" for k, v in self.phase_seconds.items() if k in PHASES)
        line = (f"{self.stage.label}: {self.frames} frames, {self.tokens} tokens in {self.seconds:.1f} s "
                f"({self.embed_seconds:.1f} s embedding: {embed_frames:.0f} frames/s, "
                f"{embed_tokens:.0f} tokens/s; {waiting:.1f} s getting workers ready and checking "
                f"files{f' ({steps})' if steps else ''}; {self.frames_per_s:.0f} frames/s over the whole stage)")
        if self.shards_skipped:
            line += f"; {self.shards_skipped} of {self.shards_total} shards were already done"
        if self.duplicate_frames:
            line += f"; {self.duplicate_frames} frames were duplicates of others in the run (computed once)"
        if self.shards_scored:
            line += f"; {self.shards_scored} shards scored by the classifier beside it"
        if self.cache_hits or self.cache_added:
            line += (f"; embedding cache: {self.cache_hits} frames read from it, "
                     f"{self.cache_added} new rows added")
        return line


@dataclass(frozen=True, slots=True)
class StagePlan:
    """What a stage will do, found before its workers are needed: each shard's frame IDs, the
    shards not already on disk, and their work (first occurrences written as work shards, where
    each row comes from; :func:`~virnucpro.pipeline.dedupe.plan_unique`). It depends only on the
    prepared shards and the stage's own folder, so a run makes it beside earlier steps."""

    stage: FeatureStage
    expected: dict[int, list[str]]
    todo: list[Shard]
    planned: list[dedupe.UniqueShard]
    cache: EmbeddingCache | None
    seconds: float


def plan_stage(stage: FeatureStage, shards: list[Shard], paths: OutputPaths,
               cache: EmbeddingCache | None = None) -> StagePlan:
    """Find the done shards (a damaged feature file is removed, to be recomputed) and plan the
    rest (:class:`StagePlan`)."""
    started = time.perf_counter()
    expected = {s.shard_id: list(iter_shard_ids(s.path)) for s in shards}
    todo = [s for s in shards
            if not features_complete(paths.feature_file(stage.value, s.name), expected[s.shard_id])]
    planned = dedupe.plan_unique(stage, shards, todo, paths, cache) if todo else []
    return StagePlan(stage, expected, todo, planned, cache, time.perf_counter() - started)


class BatchQueueManager:
    """Runs feature stages over shards on the workers its lease gives it."""

    def __init__(
        self,
        devices: list[WorkerDevice],
        spec: WorkerSpec,
        *,
        use_persistent_pool: bool = False,
        lease: PoolLease | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 10.0,
    ) -> None:
        """``on_progress`` is called whenever frames were computed (at most about once a second)
        and once when the stage's shards are all done; progress is logged every
        ``progress_interval`` seconds."""
        self.devices = list(devices)
        self.spec = spec
        self._own_lease = lease is None
        self.lease = lease if lease is not None else PoolLease.for_run(use_persistent_pool)
        self.use_persistent_pool = self.lease.persistent
        self.on_progress = on_progress
        self.progress_interval = progress_interval

    @property
    def pool(self) -> PersistentWorkerPool | None:
        """The resident pool, if one runs now."""
        return self.lease.pool

    def close(self) -> None:
        """Close the lease if this manager made it (a caller's lease is the caller's to close)."""
        if self._own_lease:
            self.lease.close()

    def __enter__(self) -> "BatchQueueManager":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- a stage ------------------------------------------------------------------------------
    def run_stage(self, stage: FeatureStage, shards: list[Shard], paths: OutputPaths,
                  cache: EmbeddingCache | None = None,
                  on_complete: Callable[[Shard], None] | None = None,
                  planned_ahead: StagePlan | None = None) -> StageReport:
        """Compute ``stage`` features for every shard not already on disk; verify all of them.
        Rows ``cache`` holds are read from it; the rows computed are added to it.
        ``on_complete(shard)`` is called beside the stage, in its expanding thread, as each
        computed shard's full feature file is written and checked (an error there fails the
        stage). ``planned_ahead``: this stage's :func:`plan_stage`, made beside earlier steps
        (its cache is the one used); None plans it now."""
        started = time.perf_counter()
        phases: dict[str, float] = {}
        if planned_ahead is not None and planned_ahead.stage is not stage:
            raise ValueError(f"a plan of the {planned_ahead.stage.label} stage given to the {stage.label} stage")
        stage_plan = planned_ahead if planned_ahead is not None else plan_stage(stage, shards, paths, cache)
        cache = stage_plan.cache
        expected, todo, planned = stage_plan.expected, stage_plan.todo, stage_plan.planned
        skipped = len(shards) - len(todo)
        if skipped:
            logger.info("%s: %d of %d shards already done; resuming", stage.label, skipped, len(shards))
        dones: list[TaskDone] = []
        peaks: dict[str, float] = {}
        loads: dict[str, dict[str, int]] = {}
        restarts = 0
        pool_start = 0.0
        embed_seconds = 0.0
        work = [(u.work, u.out_path) for u in planned if u.work is not None and not dedupe.work_done(u)]
        to_compute = {shard.shard_id for shard, _ in work}

        def complete(shard: Shard) -> None:  # in the expanding thread, beside the stage
            check_feature_ids(paths.feature_file(stage.value, shard.name), expected[shard.shard_id])
            if on_complete is not None:
                on_complete(shard)

        expansion = dedupe.Expansion(stage, shards, planned,
                                     [u.shard.shard_id for u in planned if u.shard.shard_id not in to_compute],
                                     paths, complete)
        phases["plan"] = time.perf_counter() - started
        # duplicates' rows are copied into full feature files beside the stage, one thread
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="expand") as expander:
            expanding: list[Future] = [expander.submit(expansion.computed)]
            if work:
                acquire = time.perf_counter()
                with self.lease.stage_pool(self.devices, self.spec, stage) as handle:
                    pool_start = handle.start_seconds
                    restarts_before = sum(w.restarts for w in handle.pool.workers)
                    embed_started = time.perf_counter()
                    phases["workers"] = embed_started - acquire
                    dones = self._run_on(handle.pool, stage, work, on_done=lambda shard: expanding.append(
                        expander.submit(expansion.computed, shard.shard_id)))
                    embed_seconds = time.perf_counter() - embed_started
                    stage_end = time.perf_counter()
                phases["stage_end"] = time.perf_counter() - stage_end
                for info in handle.pool.workers:
                    peaks[info.name] = info.peak_mib
                    loads[info.name] = dict(info.total_model_loads)
                restarts = sum(w.restarts for w in handle.pool.workers) - restarts_before
                for end in handle.ended:
                    peaks[end.worker] = max(peaks.get(end.worker, 0.0), end.peak_mib)
            finishing = time.perf_counter()
        for future in expanding:
            future.result()  # an unreadable file found while expanding fails the stage here
        expansion.finish()
        phases["last_shards"] = time.perf_counter() - finishing
        finishing = time.perf_counter()
        added = dedupe.add_to_cache(cache, planned) if cache is not None else 0
        if planned:
            dedupe.remove_unique(paths, stage)
        duplicates = sum(u.duplicates for u in planned)
        hits = sum(u.cache_hits for u in planned)
        computed = {u.shard.shard_id for u in planned}  # checked as each was written (complete)
        for shard in shards:  # every frame in -> exactly one embedding out (finite: the worker checked)
            if shard.shard_id not in computed:
                check_feature_ids(paths.feature_file(stage.value, shard.name), expected[shard.shard_id])
        phases["finish"] = time.perf_counter() - finishing
        report = StageReport(
            stage=stage,
            persistent=self.use_persistent_pool,
            shards_total=len(shards),
            shards_skipped=skipped,
            frames=sum(d.n_frames for d in dones) + duplicates + hits,
            tokens=sum(d.n_tokens for d in dones),
            padded_tokens=sum(d.padded_tokens for d in dones),
            seconds=time.perf_counter() - started,
            worker_peak_mib=peaks,
            model_loads=loads,
            worker_restarts=restarts,
            oom_retries=sum(d.oom_retries for d in dones),
            pool_start_seconds=pool_start,
            fp32_recomputed=sum(d.fp32_recomputed for d in dones),
            embed_seconds=embed_seconds,
            worker_peak_measure=WORKER_PEAK_GPU if self.spec.on_gpu else WORKER_PEAK_CPU,
            duplicate_frames=duplicates,
            cache_hits=hits,
            cache_added=added,
            phase_seconds=phases,
        )
        logger.info("%s", report.describe())
        return report

    def _run_on(
        self,
        pool: PersistentWorkerPool,
        stage: FeatureStage,
        todo: list[tuple[Shard, Path]],
        on_done: Callable[[Shard], None] | None = None,
    ) -> list[TaskDone]:
        """Run ``todo`` (shard, feature file) on ``pool``; ``on_done`` gets each shard as its
        file is written."""
        futures: dict[Future, Shard] = {pool.submit(stage, s.path, out): s for s, out in todo}  # shard order
        dones: list[TaskDone] = []
        remaining = set(futures)
        last_report = time.perf_counter()
        compute_started = time.perf_counter()
        frames_total = sum(s.n_frames for s, _ in todo)
        last_seen: tuple[int, int] = (-1, -1)
        while remaining:
            finished, remaining = wait_futures(remaining, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    done = future.result()  # a WorkerError here fails the stage loudly
                except BaseException:
                    pool.cancel_pending()
                    for other in remaining:  # let running shards finish before the pool is reused
                        try:
                            other.result(timeout=600)
                        except Exception as exc:  # cancelled, or failed too: the first error wins
                            logger.debug("%s: shard abandoned after a failure: %r", stage.label, exc)
                    raise
                dones.append(done)
                if on_done is not None:
                    on_done(futures[future])
                logger.debug("%s: shard %s done by %s: %d frames, %d tokens in %.1f s", stage.label,
                             futures[future].name, done.worker, done.n_frames, done.n_tokens, done.seconds)
            now = time.perf_counter()
            partial_frames, partial_tokens = pool.in_flight_progress() if remaining else (0, 0)
            progress = Progress(
                stage=stage,
                shards_done=len(dones),
                shards_total=len(todo),
                frames_done=min(frames_total, sum(d.n_frames for d in dones) + partial_frames),
                tokens_done=sum(d.n_tokens for d in dones) + partial_tokens,
                seconds=now - compute_started,
                frames_total=frames_total,
            )
            if now - last_report >= self.progress_interval or not remaining:
                last_report = now
                if self.on_progress is None:  # else the caller reports it (once)
                    logger.info("%s", progress.describe())
            seen = (progress.shards_done, progress.frames_done)
            if self.on_progress is not None and (seen != last_seen or not remaining):
                last_seen = seen
                self.on_progress(progress)  # at most once a second; the callback throttles
        return dones
