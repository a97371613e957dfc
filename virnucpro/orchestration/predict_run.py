"""The body of the ``virnucpro-predict`` flow: the engine's run, its steps as tasks, its artifacts."""

from __future__ import annotations

from prefect import get_run_logger

from virnucpro.config import RunConfig
from virnucpro.orchestration.artifacts import (
    DEMO_WARNING,
    publish_memory_checkpoints,
    publish_prediction_summary,
    publish_report_link,
)
from virnucpro.orchestration.progress import StageProgress
from virnucpro.orchestration.run_start import start_run
from virnucpro.orchestration.task_runner import current_gpu_runner
from virnucpro.orchestration.tasks import PrefectSteps
from virnucpro.pipeline.finalize import PredictionResult
from virnucpro.pipeline.prediction import run_prediction

__all__ = ["predict_in_flow"]


def predict_in_flow(config: RunConfig) -> PredictionResult:
    """Run ``config`` inside the current flow run: each step a task, on the runner's lease.

    Publishes a progress artifact per feature stage while it runs, the
    ``gpu-memory-checkpoints-<sample>`` table (also when the run failed half-way), the
    ``prediction-summary-<sample>`` markdown and the ``report-<sample>`` link.
    """
    notes = start_run()
    runner = current_gpu_runner()
    steps = PrefectSteps()
    try:
        result = run_prediction(
            config,
            persistent_models=config.persistent_models,
            lease=runner.lease if runner is not None else None,
            steps=steps,
            on_progress=StageProgress(config.input_fasta),
        )
    finally:
        publish_memory_checkpoints(steps.checkpoints, config.input_fasta)
    publish_prediction_summary(result, notes)
    publish_report_link(result)
    if result.demo_models:
        get_run_logger().warning(DEMO_WARNING)
    return result
