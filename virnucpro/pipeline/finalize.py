"""The last step of a run: run_info.json, report.html and the DONE marker; the run's result."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.report import render_report
from virnucpro.pipeline.memory import MemoryCheckpoint
from virnucpro.pipeline.output_dir import publish_outputs
from virnucpro.pipeline.plan import RunPlan
from virnucpro.pipeline.run_info import RunInfo, build_run_info
from virnucpro.pipeline.stages import ClassifyReport, PreparedSample, ReportResult
from virnucpro.pipeline.work_queue import StageReport

__all__ = ["PredictionResult", "finalize_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """What a run produced and measured; ``info`` is what run_info.json holds."""

    paths: OutputPaths
    prepared: PreparedSample
    stages: tuple[StageReport, ...]
    classify: ClassifyReport
    report: ReportResult
    checkpoints: tuple[MemoryCheckpoint, ...]
    info: RunInfo
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def demo_models(self) -> bool:
        return self.info.demo_models


def finalize_run(
    plan: RunPlan,
    prepared: PreparedSample,
    stages: tuple[StageReport, ...],
    classify: ClassifyReport,
    report: ReportResult,
    checkpoints: tuple[MemoryCheckpoint, ...],
    timings: dict[str, float],
    checksums: dict[str, dict[str, Any]],
) -> PredictionResult:
    """Write run_info.json and report.html, publish every final output, mark the run DONE."""
    info = build_run_info(plan, prepared, stages, classify, report, checkpoints, timings, checksums)
    staged = prepared.paths
    info.write(staged.run_info)
    atomic_write_text(staged.report, render_report(info, staged))
    paths = publish_outputs(staged)  # every final output at once, after all were written
    atomic_write_text(paths.done_marker, prepared.input_sha256 + "\n")
    if plan.demo_models:
        logger.warning(
            "DEMO MODELS: these weights are random; the calls in %s are meaningless",
            prepared.output_dir,
        )
    return PredictionResult(
        paths=paths,
        prepared=prepared,
        stages=tuple(stages),
        classify=classify,
        report=report,
        checkpoints=tuple(checkpoints),
        info=info,
        timings=dict(timings),
    )
