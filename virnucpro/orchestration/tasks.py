"""The prediction stages as Prefect tasks: thin wrappers over :mod:`virnucpro.pipeline.stages`.

Tasks pass paths, IDs, configs and small typed records (``RunPlan``, ``PreparedSample``,
``StageReport``...), never models or tensors. The feature tasks get their worker pool from the
flow run's :class:`~virnucpro.orchestration.task_runner.GpuTaskRunner`: one resident pool for both
stages when ``persistent_models`` is on, per-stage workers otherwise. They have ``retries=1``: an
attempt that fails because the pool broke closes that pool, and the retry starts fresh workers and
resumes from the shards already on disk.

Resume is the pipeline's job (finished shards are reused), so Prefect result caching is off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from virnucpro.config import RunConfig
from virnucpro.domain.disk import is_disk_error
from virnucpro.orchestration.batch import InboxScan, scan_inbox
from virnucpro.orchestration.task_runner import current_gpu_runner
from virnucpro.pipeline.memory import MemoryCheckpoint, read_checkpoint
from virnucpro.pipeline.prediction import (
    PERSISTENT_LOG_LINE,
    PredictionResult,
    RunPlan,
    finalize_run,
    make_queue,
    plan_run,
)
from virnucpro.pipeline.run_info import ModelChecksums
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
from virnucpro.pipeline.work_queue import Progress, StageReport

__all__ = [
    "resolve_plan",
    "model_checksums",
    "prepare",
    "dnabert_features",
    "esm_features",
    "memory_checkpoint",
    "classify",
    "report",
    "finalize",
    "find_new_samples",
    "run_feature_stage",
    "retry_unless_disk_error",
]

_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
FEATURE_RETRIES = 1


def retry_unless_disk_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: a full, read-only or unwritable disk stays so, no retry."""
    return not is_disk_error(state.result(raise_on_failure=False))


@task(name="plan-run", **_TASK_OPTIONS)
def resolve_plan(config: RunConfig) -> RunPlan:
    """Resolve the three models and the devices (ModelNotFoundError says what is missing)."""
    plan = plan_run(config)
    logger = get_run_logger()
    for location in plan.models:
        logger.info("%s: %s (%s, via %s)", location.kind, location.path, location.source, location.found_via)
    logger.info("workers: %s; precision %s", ", ".join(d.name for d in plan.devices), plan.spec.precision)
    if plan.demo_models:
        logger.warning("DEMO MODELS WITH RANDOM WEIGHTS: every call of this run is meaningless")
    return plan


@task(name="model-checksums", **_TASK_OPTIONS)
def model_checksums(plan: RunPlan) -> dict[str, dict[str, Any]]:
    """SHA-256 of every model file (runs beside the stages: the ESM-2 file is 5.7 GB)."""
    return ModelChecksums.start(plan.models).result()


@task(name="prepare", **_TASK_OPTIONS)
def prepare(config: RunConfig) -> PreparedSample:
    """Chunk and translate the input into frame shards on disk (reused when already done)."""
    prepared = prepare_stage(config)
    get_run_logger().info(
        "%s: %d records, %d chunks, %d frames in %d shards%s",
        prepared.input_path, prepared.n_records, prepared.n_chunks, prepared.n_frames,
        len(prepared.shards), " (reused)" if prepared.reused else "",
    )
    return prepared


def run_feature_stage(plan: RunPlan, prepared: PreparedSample, stage: FeatureStage) -> StageReport:
    """One feature stage on the flow run's pool (or per-stage workers); the feature tasks' body."""
    logger = get_run_logger()
    runner = current_gpu_runner()
    pool = None
    pool_start = 0.0
    if runner is not None:
        opened_before, started = runner.pools_opened, time.perf_counter()
        pool = runner.pool_for(plan)
        if runner.pools_opened > opened_before and pool is not None:
            pool_start = time.perf_counter() - started
            logger.info("opened the flow run's worker pool (%s; pids %s) in %.1f s",
                        ", ".join(w.name for w in pool.workers), pool.pids(), pool_start)
    elif plan.persistent_models:
        logger.warning(
            "%s runs outside a GpuTaskRunner: its persistent pool lives for this task only; "
            "use the virnucpro-predict flow to keep models loaded across both stages", stage.label,
        )
    if pool is not None:
        logger.info(PERSISTENT_LOG_LINE)

    def progress(p: Progress) -> None:
        logger.info("%s: %d/%d shards, %.0f frames/s, %.0f tokens/s",
                    p.stage.label, p.shards_done, p.shards_total, p.frames_per_s, p.tokens_per_s)

    queue = make_queue(plan, pool, on_progress=progress)
    try:
        report = feature_stage(prepared, stage, queue)
    except Exception:
        if runner is not None and pool is not None:
            runner.discard_pool(pool)  # the retry starts fresh workers
        raise
    finally:
        queue.close()
    if pool_start:  # the stage's time includes starting the pool, as in run_prediction
        report = dataclasses.replace(report, seconds=report.seconds + pool_start,
                                     pool_start_seconds=pool_start)
    logger.info(
        "%s: %d frames, %d tokens in %.1f s (%.0f frames/s); model loads %s",
        stage.label, report.frames, report.tokens, report.seconds, report.frames_per_s,
        report.model_loads,
    )
    return report


@task(name="dnabert-features", retries=FEATURE_RETRIES, retry_condition_fn=retry_unless_disk_error,
      **_TASK_OPTIONS)
def dnabert_features(plan: RunPlan, prepared: PreparedSample) -> StageReport:
    """DNABERT-S embeddings of every nucleotide frame."""
    return run_feature_stage(plan, prepared, FeatureStage.DNABERT)


@task(name="esm-features", retries=FEATURE_RETRIES, retry_condition_fn=retry_unless_disk_error,
      **_TASK_OPTIONS)
def esm_features(plan: RunPlan, prepared: PreparedSample) -> StageReport:
    """ESM-2 embeddings of every protein frame."""
    return run_feature_stage(plan, prepared, FeatureStage.ESM)


@task(name="memory-checkpoint", **_TASK_OPTIONS)
def memory_checkpoint(name: str, worker_peaks_mib: dict[str, float] | None = None) -> MemoryCheckpoint:
    """Device memory (NVML) at a named point; says "NVML unavailable: ..." on CPU machines."""
    checkpoint = read_checkpoint(name, worker_peaks_mib)
    logger = get_run_logger()
    if not checkpoint.nvml_available or not checkpoint.devices:
        logger.info("memory checkpoint %s: %s", name, checkpoint.note)
    for device in checkpoint.devices:
        logger.info("memory checkpoint %s: GPU %d %s used %.0f / %.0f MiB", name, device.index,
                    device.name, device.used_mib, device.total_mib)
    return checkpoint


@task(name="classify", **_TASK_OPTIONS)
def classify(plan: RunPlan, prepared: PreparedSample) -> ClassifyReport:
    """Join both embeddings by frame ID and classify (CPU, fp32)."""
    return classify_stage(prepared, plan.models.classifier.path)


@task(name="report", **_TASK_OPTIONS)
def report(prepared: PreparedSample) -> ReportResult:
    """Write the original's two tables and the per-sequence table."""
    result = report_stage(prepared)
    get_run_logger().info("sequence calls: %s; %d of %d chunks called virus", result.sequence_calls,
                          result.n_virus_chunks, result.n_chunks_called)
    return result


@task(name="finalize", **_TASK_OPTIONS)
def finalize(
    plan: RunPlan,
    prepared: PreparedSample,
    stages: tuple[StageReport, ...],
    classify_report: ClassifyReport,
    report_result: ReportResult,
    checkpoints: tuple[MemoryCheckpoint, ...],
    timings: dict[str, float],
    checksums: dict[str, dict[str, Any]] | None,
    started_at: float | None = None,
) -> PredictionResult:
    """Write run_info.json, report.html and the DONE marker (``started_at``: epoch seconds)."""
    timings = dict(timings)
    if started_at is not None:
        timings["total"] = time.time() - started_at
    return finalize_run(plan, prepared, tuple(stages), classify_report, report_result,
                        tuple(checkpoints), timings, checksums)


@task(name="find-new-samples", **_TASK_OPTIONS)
def find_new_samples(inbox: Path, outbox: Path, patterns: Sequence[str]) -> InboxScan:
    """Hash the inbox's samples; sort them into pending, already finished and duplicate."""
    scan = scan_inbox(inbox, outbox, patterns)
    get_run_logger().info(
        "inbox %s: %d new, %d already finished, %d duplicate content",
        inbox, len(scan.pending), len(scan.finished), len(scan.duplicates),
    )
    return scan
