"""run_prediction: the framework-free engine behind ``virnucpro predict``.

prepare → DNABERT-S features → ESM-2 features → classify → report, with
``BatchQueueManager(..., use_persistent_pool=persistent_models)`` for both feature stages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from virnucpro.config import RunConfig
from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.outputs import OutputPaths
from virnucpro.models.discovery import ResolvedModels, resolve_models
from virnucpro.pipeline.devices import WorkerDevice, plan_devices
from virnucpro.pipeline.html_report import render_report
from virnucpro.pipeline.memory import MemoryCheckpoint, read_checkpoint
from virnucpro.pipeline.messages import WorkerSpec
from virnucpro.pipeline.output_lock import output_lock
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool
from virnucpro.pipeline.precision import effective_precision
from virnucpro.pipeline.run_info import ModelChecksums, build_run_info, write_run_info
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.stages import (
    ClassifyReport,
    PreparedSample,
    ReportResult,
    classify_stage,
    feature_stage,
    prepare_stage,
    report_stage,
)
from virnucpro.pipeline.work_queue import BatchQueueManager, Progress, StageReport

__all__ = [
    "PredictionResult",
    "run_prediction",
    "RunPlan",
    "plan_run",
    "resolve_run_models",
    "worker_spec",
    "open_pool",
    "make_queue",
    "finalize_run",
    "PERSISTENT_LOG_LINE",
]

logger = logging.getLogger(__name__)

PERSISTENT_LOG_LINE = "Using persistent model loading - models will remain in GPU memory"


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """What a run produced and measured."""

    paths: OutputPaths
    prepared: PreparedSample
    stages: tuple[StageReport, ...]
    classify: ClassifyReport
    report: ReportResult
    checkpoints: tuple[MemoryCheckpoint, ...]
    timings: dict[str, float] = field(default_factory=dict)
    demo_models: bool = False


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Resolved models, devices and worker settings of one run. Paths and strings only."""

    config: RunConfig
    models: ResolvedModels
    devices: tuple[WorkerDevice, ...]
    spec: WorkerSpec
    persistent_models: bool

    @property
    def demo_models(self) -> bool:
        return any(m.source == "demo" for m in self.models)


def resolve_run_models(config: RunConfig) -> ResolvedModels:
    return resolve_models(
        config.models.dnabert, config.models.esm, config.models.classifier, config.chunk_length
    )


def worker_spec(config: RunConfig, models: ResolvedModels, devices: list[WorkerDevice]) -> WorkerSpec:
    on_gpu = any(d.is_cuda for d in devices)
    return WorkerSpec(
        dnabert_path=models.dnabert.path,
        esm_path=models.esm.path,
        precision=effective_precision(config, on_gpu).value,
        on_gpu=on_gpu,
        preload=(FeatureStage.DNABERT, FeatureStage.ESM),
        toks_per_batch=config.toks_per_batch,
    )


def plan_run(config: RunConfig, persistent_models: bool | None = None) -> RunPlan:
    """Resolve models (ModelNotFoundError names what is missing) and devices; start nothing."""
    models = resolve_run_models(config)
    devices = plan_devices(config)
    persistent = config.persistent_models if persistent_models is None else persistent_models
    return RunPlan(config, models, tuple(devices), worker_spec(config, models, devices), persistent)


def open_pool(plan: RunPlan) -> PersistentWorkerPool:
    """A started persistent pool (both models resident) for callers that keep it across samples."""
    return PersistentWorkerPool(list(plan.devices), plan.spec).start()


def make_queue(
    plan: RunPlan,
    pool: PersistentWorkerPool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> BatchQueueManager:
    """The queue both feature stages use: persistent (lent ``pool`` or its own) or per stage."""
    persistent = plan.persistent_models or pool is not None
    if persistent:
        logger.info(PERSISTENT_LOG_LINE)
    return BatchQueueManager(
        list(plan.devices), plan.spec, use_persistent_pool=persistent, pool=pool,
        on_progress=on_progress,
    )


def finalize_run(
    plan: RunPlan,
    prepared: PreparedSample,
    stages: tuple[StageReport, ...],
    classify: ClassifyReport,
    report: ReportResult,
    checkpoints: tuple[MemoryCheckpoint, ...],
    timings: dict[str, float],
    checksums: dict | None = None,
) -> PredictionResult:
    """Write run_info.json, report.html and the DONE marker; return the run's result."""
    result = PredictionResult(
        paths=prepared.paths,
        prepared=prepared,
        stages=stages,
        classify=classify,
        report=report,
        checkpoints=checkpoints,
        timings=dict(timings),
        demo_models=plan.demo_models,
    )
    if checksums is None:
        checksums = ModelChecksums.start(plan.models).result()
    info = build_run_info(plan.config, result, plan.models, checksums, list(plan.devices),
                          plan.spec.precision, plan.persistent_models)
    write_run_info(result.paths.run_info, info)
    atomic_write_text(result.paths.report, render_report(info, result.paths))
    atomic_write_text(result.paths.done_marker, prepared.input_sha256 + "\n")
    if plan.demo_models:
        logger.warning(
            "DEMO MODELS: these weights are random; the calls in %s are meaningless",
            prepared.output_dir,
        )
    return result


def run_prediction(
    config: RunConfig,
    *,
    persistent_models: bool | None = None,
    pool: PersistentWorkerPool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> PredictionResult:
    """Run the whole pipeline on one input and write every output atomically.

    ``persistent_models`` (default: ``config.persistent_models``, itself False) keeps both models
    loaded in each worker across the two feature stages; ``pool`` lends an already running
    persistent pool (kept open afterwards) so several samples share loaded models.
    """
    with output_lock(config.output_dir):
        return _run_locked(config, persistent_models, pool, on_progress)


def _run_locked(
    config: RunConfig,
    persistent_models: bool | None,
    pool: PersistentWorkerPool | None,
    on_progress: Callable[[Progress], None] | None,
) -> PredictionResult:
    started = time.perf_counter()
    plan = plan_run(config, persistent_models)
    checksums = ModelChecksums.start(plan.models)  # hashes the large files while the run goes on
    checkpoints = [read_checkpoint("start")]
    prepared = prepare_stage(config)
    timings: dict[str, float] = {"prepare": prepared.seconds}
    reports: list[StageReport] = []
    queue = make_queue(plan, pool, on_progress)
    try:
        for stage in (FeatureStage.DNABERT, FeatureStage.ESM):
            stage_report = feature_stage(prepared, stage, queue)
            reports.append(stage_report)
            timings[stage.value] = stage_report.seconds
            checkpoints.append(read_checkpoint(f"after-{stage.value}", stage_report.worker_peak_mib))
    finally:
        queue.close()
    classify = classify_stage(prepared, plan.models.classifier.path)
    timings["classify"] = classify.seconds
    report = report_stage(prepared)
    timings["report"] = report.seconds
    checkpoints.append(read_checkpoint("end"))
    timings["total"] = time.perf_counter() - started
    return finalize_run(plan, prepared, tuple(reports), classify, report, tuple(checkpoints),
                        timings, checksums.result())
