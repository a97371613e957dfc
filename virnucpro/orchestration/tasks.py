"""The run's steps as Prefect tasks, made from the one step list of :mod:`virnucpro.pipeline.steps`.

:class:`PrefectSteps` is the step caller the flow hands to
:func:`~virnucpro.pipeline.prediction.run_prediction`: each step becomes a task run of the step's
name (``prepare``, ``dnabert-features``, ``memory-checkpoint-after-esm``, ...), so the flow's
stages are tasks while the order of a run stays written once, in ``pipeline/``.

Tasks pass paths, IDs, configs and small typed records (``RunPlan``, ``PreparedSample``,
``StageReport``...), never models or tensors; a feature task also gets the flow run's
:class:`~virnucpro.pipeline.lease.PoolLease` (from the :class:`GpuTaskRunner`). Feature tasks have
``retries=1``: an attempt that fails on a broken pool discards it (the lease does), and the retry
starts fresh workers and resumes from the shards already on disk.

Every task has a timeout (:func:`step_timeout`): an hour, plus for the feature, classify and
prepare steps a budget per frame or input byte, generous enough for the slowest device, so a
wedged worker fails its task instead of holding a GPU all night.

Resume is the pipeline's job (finished shards are reused), so Prefect result caching is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from virnucpro.domain.disk import is_disk_error
from virnucpro.orchestration.batch import InboxScan, scan_inbox
from virnucpro.orchestration.partition import input_size
from virnucpro.pipeline.memory import MemoryCheckpoint
from virnucpro.pipeline.steps import CHECKPOINT, CLASSIFY, FEATURES, PREPARE, STEPS, Step

__all__ = ["PrefectSteps", "STEP_TASKS", "find_new_samples", "step_timeout", "retry_unless_disk_error"]

TIMEOUT_FLOOR_S = 3600.0
FEATURE_S_PER_FRAME = {True: 0.5, False: 30.0}
"""Feature-stage budget per frame on a GPU (fp32 ESM-2 3B does ~35 frames/s on an H200) and on the
CPU (the 3B model embeds well under a frame a second there)."""
CLASSIFY_S_PER_FRAME = 0.01
PREPARE_BYTES_PER_S = 50_000.0
"""Chunking and translation stream several MB/s; 50 kB/s is the budget."""

_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def retry_unless_disk_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: a full, read-only or unwritable disk stays so, no retry."""
    return not is_disk_error(state.result(raise_on_failure=False))


def _as_task(step: Step) -> Task[Any, Any]:
    options: dict[str, Any] = dict(_TASK_OPTIONS, name=step.name, retries=step.retries,
                                   description=(step.fn.__doc__ or "").strip().split("\n")[0])
    if step.retries:
        options["retry_condition_fn"] = retry_unless_disk_error
    if step.run_name:
        options["task_run_name"] = step.run_name
    return task(step.fn, **options)


STEP_TASKS: dict[str, Task[Any, Any]] = {step.name: _as_task(step) for step in STEPS}
"""One Prefect task per step, named after it."""


def step_timeout(step: Step, args: Sequence[Any]) -> float:
    """Seconds the task of ``step`` called with ``args`` may take."""
    if step in FEATURES.values():
        plan, prepared = args[0], args[1]
        return TIMEOUT_FLOOR_S + prepared.n_frames * FEATURE_S_PER_FRAME[bool(plan.on_gpu)]
    if step is CLASSIFY:
        return TIMEOUT_FLOOR_S + args[0].n_frames * CLASSIFY_S_PER_FRAME
    if step is PREPARE:
        try:
            return TIMEOUT_FLOOR_S + input_size(args[0].input_fasta) / PREPARE_BYTES_PER_S
        except OSError:  # a missing input fails in the step itself, with its own message
            return TIMEOUT_FLOOR_S
    return TIMEOUT_FLOOR_S


def _task_for(step: Step, args: Sequence[Any]) -> Task[Any, Any]:
    return STEP_TASKS[step.name].with_options(timeout_seconds=step_timeout(step, args))


class PrefectSteps:
    """Runs each step as its Prefect task (inside a flow run); keeps the memory checkpoints seen,
    so a flow can publish them also when the run failed half-way."""

    def __init__(self) -> None:
        self.checkpoints: list[MemoryCheckpoint] = []

    def run(self, step: Step, *args: Any) -> Any:
        value = _task_for(step, args).submit(*args).result()
        if step is CHECKPOINT:
            self.checkpoints.append(value)
        return value

    def start(self, step: Step, *args: Any) -> PrefectFuture[Any]:
        return _task_for(step, args).submit(*args)


@task(name="find-new-samples", timeout_seconds=6 * TIMEOUT_FLOOR_S, **_TASK_OPTIONS)
def find_new_samples(inbox: Path, outbox: Path, patterns: Sequence[str]) -> InboxScan:
    """Hash the inbox's samples; sort them into pending, already finished and duplicate."""
    scan = scan_inbox(inbox, outbox, patterns)
    get_run_logger().info(
        "inbox %s: %d new, %d already finished, %d duplicate content",
        inbox, len(scan.pending), len(scan.finished), len(scan.duplicates),
    )
    return scan
