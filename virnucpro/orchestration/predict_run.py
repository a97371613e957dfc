"""The body of the ``virnucpro-predict`` flow: the engine's run, its steps as tasks, its artifacts."""

from __future__ import annotations

from prefect import get_run_logger

from virnucpro.config import RunConfig
from virnucpro.orchestration.artifacts import (
    DEMO_WARNING,
    publish_memory_checkpoints,
    publish_prediction_summary,
)
from virnucpro.orchestration.task_runner import current_gpu_runner
from virnucpro.orchestration.tasks import PrefectSteps
from virnucpro.pipeline.finalize import PredictionResult
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.work_queue import Progress

__all__ = ["predict_in_flow"]


def _log_progress(p: Progress) -> None:
    get_run_logger().info("%s", p.describe())


def predict_in_flow(config: RunConfig) -> PredictionResult:
    """Run ``config`` inside the current flow run: each step a task, on the runner's lease.

    Publishes the ``gpu-memory-checkpoints`` table (also when the run failed half-way) and the
    ``prediction-summary`` markdown.
    """
    runner = current_gpu_runner()
    steps = PrefectSteps()
    try:
        result = run_prediction(
            config,
            persistent_models=config.persistent_models,
            lease=runner.lease if runner is not None else None,
            steps=steps,
            on_progress=_log_progress,
        )
    finally:
        publish_memory_checkpoints(steps.checkpoints, sample=config.input_fasta.name)
    publish_prediction_summary(result)
    if result.demo_models:
        get_run_logger().warning(DEMO_WARNING)
    return result
