"""run_prediction: the framework-free engine behind ``virnucpro predict`` and the Prefect flow.

The order of a run, written once: memory checkpoint → plan (models, devices) → model checksums
(beside the rest) → resident workers started (persistent mode, beside prepare) → prepare → for
each feature stage (each planned beside the step before it: the workers' start, the first
stage): features, memory checkpoint → classify → report → memory checkpoint → finalize (these
three with the garbage collector paused: :func:`~virnucpro.pipeline.heap.collection_paused`). Both feature stages run through
``BatchQueueManager(..., use_persistent_pool=persistent_models)`` semantics, on the workers of the
run's :class:`~virnucpro.pipeline.lease.PoolLease`.

How each step is called is the caller's: the CLI calls the functions (the default,
:class:`~virnucpro.pipeline.steps.DirectSteps`); the flow passes a caller that submits each step as
a Prefect task. Both get the same outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from virnucpro.config import RunConfig
from virnucpro.pipeline.finalize import PredictionResult
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.heap import collection_paused
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.output_dir import clear_earlier_outputs
from virnucpro.pipeline.output_lock import output_lock
from virnucpro.pipeline.stage import FEATURE_STAGES
from virnucpro.pipeline.steps import (
    CHECK_MODELS,
    CHECKPOINT,
    CHECKSUMS,
    CLASSIFY,
    FEATURES,
    FINALIZE,
    PERSISTENT_LOG_LINE,
    PLAN,
    PLAN_FEATURES,
    PREPARE,
    REPORT,
    START_WORKERS,
    DirectSteps,
    StepCaller,
)
from virnucpro.pipeline.work_queue import Progress, StageReport

__all__ = ["PredictionResult", "run_prediction", "PERSISTENT_LOG_LINE"]

logger = logging.getLogger(__name__)


def run_prediction(
    config: RunConfig,
    *,
    persistent_models: bool = False,
    lease: PoolLease | None = None,
    steps: StepCaller | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> PredictionResult:
    """Run the whole pipeline on one input and write every output atomically.

    Models stay resident in each worker across both feature stages when ``persistent_models`` OR
    ``config.persistent_models`` is true (either one switches it on; the CLI and the flow set both
    from the same option). A caller that keeps workers across several samples passes its own
    ``lease`` (e.g. ``night_lease.lend()``); the lease then decides, and the run never closes it.
    ``steps`` says how each step is called (default: directly, in this process).
    """
    caller = steps if steps is not None else DirectSteps()
    with output_lock(config.output_dir):
        # before any work that can fail (model resolution too): a failed run leaves no old results
        clear_earlier_outputs(OutputPaths.for_dir(config.output_dir))
        if lease is not None:
            return _run(config, lease, caller, on_progress, owns_lease=False)
        with PoolLease.for_run(persistent_models or config.persistent_models) as own:
            return _run(config, own, caller, on_progress, owns_lease=True)


def _run(
    config: RunConfig,
    lease: PoolLease,
    call: StepCaller,
    on_progress: Callable[[Progress], None] | None,
    *,
    owns_lease: bool,
) -> PredictionResult:
    """``owns_lease``: the lease is this run's own, so its workers end beside classify and report
    (a caller's lease may serve its later samples and is left as it is)."""
    started = time.perf_counter()
    checkpoints = [call.run(CHECKPOINT, "start", None)]
    plan = call.run(PLAN, config, lease.persistent)
    checksums = call.start(CHECKSUMS, plan.models)  # hashes the large files while the run goes on
    # resident workers load their models while the models are checked and the input is prepared
    workers = call.start(START_WORKERS, lease, plan) if lease.persistent else None
    call.run(CHECK_MODELS, plan)  # before any work; the first import of torch in this process
    prepared = call.run(PREPARE, config)
    timings: dict[str, float] = {"prepare": prepared.seconds}
    # a stage's plan depends only on the prepared shards and its own folder: each is made beside
    # the step before it (DNABERT-S's while the workers finish their start, ESM-2's while
    # DNABERT-S runs), one at a time (two at once share one interpreter and both finish later)
    ahead = {FEATURE_STAGES[0]: call.start(PLAN_FEATURES, plan, prepared, FEATURE_STAGES[0])}
    reports: list[StageReport] = []
    try:
        if workers is not None:
            timings["start_workers"] = workers.result()
        for stage, after in zip(FEATURE_STAGES, (*FEATURE_STAGES[1:], None)):
            planned = ahead[stage].result()
            if after is not None:
                ahead[after] = call.start(PLAN_FEATURES, plan, prepared, after)
            report = call.run(FEATURES[stage], plan, prepared, stage, lease, on_progress, planned)
            reports.append(report)
            timings[stage.value] = report.seconds
            checkpoints.append(call.run(CHECKPOINT, f"after-{stage.value}", report.worker_peak_mib))
    finally:  # a failed stage: no planning thread goes on writing into the output folder
        for pending in ahead.values():
            pending.result()  # never raises: plan_features keeps its error for the feature step
    if owns_lease:
        lease.close_beside()
    classified = call.run(CLASSIFY, prepared, plan.models.classifier.path)
    timings["classify"] = classified.seconds
    with collection_paused():  # the steps run in this process (the flow's tasks in its threads)
        reported = call.run(REPORT, prepared, plan.calling)
        timings["report"] = reported.seconds
        if owns_lease:
            lease.close()  # the end checkpoint sees the GPU after the workers, in every run alike
        checkpoints.append(call.run(CHECKPOINT, "end", None))
        timings["total"] = time.perf_counter() - started
        return call.run(FINALIZE, plan, prepared, tuple(reports), classified, reported,
                        tuple(checkpoints), timings, checksums.result())
