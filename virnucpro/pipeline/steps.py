"""The steps of a prediction run, listed once, and how a caller runs each one.

A run is: plan → (model checksums and the resident workers' start, beside the rest) → check the
models fit together → prepare → DNABERT-S features → ESM-2 features (each stage planned beside
the step before it: ``plan-features``) → classify → report → finalize, with a memory checkpoint
at the start, after each feature stage and at the end. :func:`virnucpro.pipeline.prediction.run_prediction` walks this order; HOW a
step is called is the caller's choice (:class:`StepCaller`):

- the CLI calls each step's function directly (:class:`DirectSteps`);
- the Prefect flow submits each step as a Prefect task of the step's name
  (``virnucpro.orchestration.steps.PrefectSteps``), so the flow's stages are tasks without the
  flow listing the stages again.

Steps take and return paths, configs and small typed records; a feature step also gets the run's
:class:`~virnucpro.pipeline.lease.PoolLease` (a handle, not a model).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from virnucpro.config import RunConfig
from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.checksums import sha256_file
from virnucpro.models.discovery import ResolvedModels
from virnucpro.pipeline.embedding_cache import EmbeddingCache, producer_key
from virnucpro.pipeline.finalize import finalize_run
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.memory import MemoryCheckpoint, read_checkpoint
from virnucpro.models.compatibility import ModelDims
from virnucpro.pipeline.plan import RunPlan, check_run_models, plan_run
from virnucpro.pipeline.stage import FEATURE_STAGES, FeatureStage
from virnucpro.pipeline.stages import ShardScorer, classify_stage, prepare_stage, report_stage
from virnucpro.pipeline.work_keys import (
    FEATURE_FORMAT_VERSION,
    claim_folder,
    feature_key,
    record_model_sha256,
    settled_key,
)
from virnucpro.pipeline.work_queue import BatchQueueManager, Progress, StagePlan, StageReport, plan_stage

__all__ = [
    "Step",
    "StepCaller",
    "DirectSteps",
    "Pending",
    "PLAN",
    "CHECK_MODELS",
    "CHECKSUMS",
    "PREPARE",
    "START_WORKERS",
    "PLAN_FEATURES",
    "PlannedAhead",
    "plan_features",
    "FEATURES",
    "CHECKPOINT",
    "CLASSIFY",
    "REPORT",
    "FINALIZE",
    "STEPS",
    "model_checksums",
    "feature_step",
    "start_workers",
    "memory_checkpoint",
    "PERSISTENT_LOG_LINE",
    "PERSISTENT_CPU_LOG_LINE",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

PERSISTENT_LOG_LINE = "Using persistent model loading - models will remain in GPU memory"
PERSISTENT_CPU_LOG_LINE = "Using persistent model loading - both models stay loaded in the CPU worker"


@dataclass(frozen=True, slots=True)
class Step:
    """One step: its name (the Prefect task's name), its function and its Prefect task retries.

    ``run_name`` is a Prefect task-run name template over the function's parameters.
    """

    name: str
    fn: Callable[..., Any]
    retries: int = 0
    run_name: str | None = None


# -- the step functions that are not stage functions of stages.py ---------------------------
def model_checksums(models: ResolvedModels) -> dict[str, dict[str, Any]]:
    """SHA-256 (and size, origin) of every model file; the ESM-2 file is 5.7 GB, so callers run
    this beside the other steps."""
    result: dict[str, dict[str, Any]] = {}
    for location in models:
        started = time.perf_counter()
        entry: dict[str, Any] = {
            "path": str(location.path),
            "file": str(location.weights_file),
            "sha256": location.sha256(),
            "source": location.source,
            "found_via": location.found_via,
            "size": location.weights_file.stat().st_size,
            "hash_seconds": round(time.perf_counter() - started, 3),
        }
        if location.kind == "dnabert" and location.tokenizer_file is not None:
            entry["tokenizer"] = str(location.tokenizer_file)
            entry["tokenizer_sha256"] = sha256_file(location.tokenizer_file)
        result[location.kind] = entry
    return result


class PlannedAhead:
    """A feature stage's plan made beside earlier steps (:func:`plan_features`), for its feature
    step to take once. A retried feature step finds it taken and plans again (a plan describes
    the stage's folder before any of its work ran). A planning error is kept, not raised: the
    feature step then plans itself and fails (or is retried) with that error as its own.

    A plain object on purpose: Prefect passes it to the feature task as it is."""

    def __init__(self, stage: FeatureStage, plan: StagePlan | None, error: str | None = None) -> None:
        self.stage = stage
        self.error = error
        self._plan = plan
        self._lock = threading.Lock()

    def take(self) -> StagePlan | None:
        """The plan, the first time only (None after that, or when planning failed)."""
        with self._lock:
            plan, self._plan = self._plan, None
            return plan


def _stage_model(plan: RunPlan, stage: FeatureStage) -> Any:
    return plan.models.dnabert if stage is FeatureStage.DNABERT else plan.models.esm


def _claim_and_plan(plan: RunPlan, prepared: Any, stage: FeatureStage) -> StagePlan:
    """Clear the stage's folder of work another model, tokenizer, precision or format made
    (:mod:`~virnucpro.pipeline.work_keys`), then find what is left to do (:func:`plan_stage`)."""
    paths = prepared.paths
    model = _stage_model(plan, stage)
    claim_folder(paths.features_dir / stage.value, feature_key(stage, model, plan.spec.precision.value),
                 f"{stage.label} features", model=model.weights_file)
    return plan_stage(stage, list(prepared.shards), paths, _embedding_cache(plan, stage))


def plan_features(plan: RunPlan, prepared: Any, stage: FeatureStage) -> PlannedAhead:
    """Plan a feature stage ahead (done shards, duplicates, work shards), beside the steps before
    it; its feature step takes the plan (:class:`PlannedAhead`)."""
    try:
        stage_plan = _claim_and_plan(plan, prepared, stage)
    except Exception as exc:  # the feature step plans again and reports it
        logger.debug("%s: planning ahead failed (%s); the stage plans itself", stage.label, exc)
        return PlannedAhead(stage, None, f"{type(exc).__name__}: {exc}")
    logger.debug("%s: planned beside the earlier steps in %.2f s", stage.label, stage_plan.seconds)
    return PlannedAhead(stage, stage_plan)


def feature_step(
    plan: RunPlan,
    prepared: Any,
    stage: FeatureStage,
    lease: PoolLease,
    on_progress: Callable[[Progress], None] | None = None,
    ahead: PlannedAhead | None = None,
) -> StageReport:
    """One feature stage over every shard of ``prepared``, on the workers ``lease`` gives.

    Feature files of this stage made by another model, tokenizer, precision or format are
    recomputed (:mod:`~virnucpro.pipeline.work_keys`); a stage found complete reports the figures
    of the run that computed it, marked ``resumed``. The last stage (ESM-2) also scores each shard
    as soon as its features are complete (:func:`_scoring_beside`), while the GPU computes the next.
    ``ahead``: the stage planned beside earlier steps (:func:`plan_features`); taken once.
    """
    paths = prepared.paths
    folder = paths.features_dir / stage.value
    model = _stage_model(plan, stage)
    stage_plan = ahead.take() if ahead is not None and ahead.stage is stage else None
    if stage_plan is None:
        stage_plan = _claim_and_plan(plan, prepared, stage)
    scoring = _ScoringBeside(plan, prepared) if stage is FEATURE_STAGES[-1] else None
    queue = BatchQueueManager(list(plan.devices), plan.spec, lease=lease, on_progress=on_progress)
    try:
        report = queue.run_stage(stage, list(prepared.shards), paths, on_complete=scoring,
                                 planned_ahead=stage_plan)
    finally:
        if scoring is not None:
            scoring.close()
    if scoring is not None:
        report = replace(report, shards_scored=scoring.scored)
    record_model_sha256(folder, model.weights_file)  # hashed beside the stage by the checksums step
    earlier = folder / _STAGE_REPORT
    if report.shards_skipped == report.shards_total and report.shards_total:
        stored = _read_stage_report(earlier)
        if stored is not None:
            return replace(stored, resumed=True, shards_skipped=report.shards_skipped)
    elif report.shards_skipped == 0:
        atomic_write_text(earlier, json.dumps(report.to_dict(), indent=1) + "\n")
    return report


_STAGE_REPORT = "REPORT.json"


class _ScoringBeside:
    """Scores each shard (:class:`ShardScorer`) as the last feature stage completes its features,
    in the stage's expanding thread, while the GPU computes the next shards. Best effort: a
    shard that fails here is left to the classify step, which scores it again and reports any
    error (score files are written atomically: none is half-written).

    The scores are claimed under the feature keys as the stage will leave them
    (:func:`~virnucpro.pipeline.work_keys.settled_key`: with the model's SHA-256, from the
    run's background checksums), which the classify step then finds: it scores only what is left.
    """

    def __init__(self, plan: RunPlan, prepared: Any) -> None:
        self.plan = plan
        self.prepared = prepared
        self.scorer: ShardScorer | None = None
        self.scored = 0
        self._threads: int | None = None

    def __call__(self, shard: Any) -> None:
        try:
            if self.scorer is None:
                import torch

                # one CPU thread: a shard's MLP takes milliseconds, and the cores are the
                # workers' (an H200 run's ESM-2 stage is fed by its worker's host threads)
                self._threads = torch.get_num_threads()
                torch.set_num_threads(1)
                models = {FeatureStage.DNABERT: self.plan.models.dnabert, FeatureStage.ESM: self.plan.models.esm}
                keys = {stage.value: settled_key(self.prepared.paths.features_dir / stage.value,
                                                 models[stage].weights_file) for stage in FEATURE_STAGES}
                self.scorer = ShardScorer(self.prepared, self.plan.models.classifier.path, keys)
            started = time.perf_counter()
            self.scorer.score(shard)
            self.scored += 1
            logger.debug("%s scored beside the stage in %.3f s", shard.name, time.perf_counter() - started)
        except Exception as exc:  # the classify step meets the same error and reports it
            logger.debug("%s: not scored beside the stage (%s); the classify step will", shard.name, exc)

    def close(self) -> None:
        """Give torch back its CPU threads (the classify step scores with all of them)."""
        if self._threads is not None:
            import torch

            torch.set_num_threads(self._threads)
            self._threads = None


def _embedding_cache(plan: RunPlan, stage: FeatureStage) -> EmbeddingCache | None:
    """The run's embedding cache for ``stage`` (None without ``--embedding-cache``). Keyed by the
    model's SHA-256: with a cache the model file is hashed before the stage (the background
    checksums step reads it at the same time; the file is read once)."""
    root = plan.config.embedding_cache
    if root is None:
        return None
    model = _stage_model(plan, stage)
    tokenizer = model.tokenizer_file
    key = producer_key(stage, model.sha256(), plan.spec.precision.value,
                       "cuda" if plan.on_gpu else "cpu",
                       sha256_file(tokenizer) if tokenizer is not None else None, FEATURE_FORMAT_VERSION)
    cache = EmbeddingCache(root, key)
    logger.info("%s: embedding cache %s", stage.label, cache.folder)
    return cache


def _read_stage_report(path: Any) -> StageReport | None:
    try:
        return StageReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def start_workers(lease: PoolLease, plan: RunPlan) -> float:
    """Start the run's resident workers (both models) now, while the input is prepared; the
    seconds until they can run the first stage (they warm ESM-2 up beside it; 0 when the
    lease's pool already runs, e.g. the night's)."""
    return lease.start(list(plan.devices), plan.spec, first_stage_ready=True)


def memory_checkpoint(name: str, worker_peaks_mib: dict[str, float] | None = None) -> MemoryCheckpoint:
    """Device memory (NVML) at a named point; says "NVML unavailable: ..." on CPU machines."""
    checkpoint = read_checkpoint(name, worker_peaks_mib)
    if not checkpoint.nvml_available or not checkpoint.devices:
        logger.info("memory checkpoint %s: %s", name, checkpoint.note)
    for device in checkpoint.devices:
        logger.info("memory checkpoint %s: GPU %d %s used %.0f / %.0f MiB", name, device.index,
                    device.name, device.used_mib, device.total_mib)
    return checkpoint


def _plan(config: RunConfig, persistent_models: bool) -> RunPlan:
    plan = plan_run(config, persistent_models)
    for location in plan.models:
        logger.info("%s: %s (%s, via %s)", location.kind, location.path, location.source, location.found_via)
    logger.info("workers: %s; precision %s", ", ".join(d.name for d in plan.devices),
                plan.spec.precision.value)
    logger.info("calls (preset %s): %s", plan.calling.preset.value, plan.calling.thresholds.describe())
    if plan.persistent_models:
        logger.info(PERSISTENT_LOG_LINE if plan.on_gpu else PERSISTENT_CPU_LOG_LINE)
    if plan.demo_models:
        logger.warning("DEMO MODELS WITH RANDOM WEIGHTS: every call of this run is meaningless")
    return plan


def _check_models(plan: RunPlan) -> ModelDims:
    dims = check_run_models(plan)
    logger.info("models fit together: DNABERT-S %d + ESM-2 %d = the classifier's %d features",
                dims.dnabert, dims.esm, dims.classifier)
    return dims


PLAN = Step("plan-run", _plan)
CHECK_MODELS = Step("check-models", _check_models)
CHECKSUMS = Step("model-checksums", model_checksums)
PREPARE = Step("prepare", prepare_stage)
START_WORKERS = Step("start-workers", start_workers)
PLAN_FEATURES = Step("plan-features", plan_features, run_name="plan-features-{stage.value}")
FEATURES: dict[FeatureStage, Step] = {
    FeatureStage.DNABERT: Step("dnabert-features", feature_step, retries=1),
    FeatureStage.ESM: Step("esm-features", feature_step, retries=1),
}
CHECKPOINT = Step("memory-checkpoint", memory_checkpoint, run_name="memory-checkpoint-{name}")
CLASSIFY = Step("classify", classify_stage)
REPORT = Step("report", report_stage)
FINALIZE = Step("finalize", finalize_run)

STEPS: tuple[Step, ...] = (PLAN, CHECK_MODELS, CHECKSUMS, PREPARE, START_WORKERS, PLAN_FEATURES,
                           *FEATURES.values(), CHECKPOINT,
                           CLASSIFY, REPORT, FINALIZE)
"""Every step of a run (the order a run takes them is :func:`run_prediction`'s)."""


# -- callers -----------------------------------------------------------------------------------
class Pending(Protocol[T]):
    def result(self) -> T: ...


class StepCaller(Protocol):
    """How a run calls its steps: ``run`` waits for the result; ``start`` runs the step beside the
    following ones and returns something with ``result()``."""

    def run(self, step: Step, *args: Any) -> Any: ...

    def start(self, step: Step, *args: Any) -> Pending[Any]: ...


class _Background(Generic[T]):
    """A step running in a daemon thread; ``result()`` joins it and re-raises its error."""

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...], name: str) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=f"virnucpro-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class DirectSteps:
    """Calls each step's function in this process (the CLI's way)."""

    def run(self, step: Step, *args: Any) -> Any:
        return step.fn(*args)

    def start(self, step: Step, *args: Any) -> Pending[Any]:
        return _Background(step.fn, args, step.name)
