"""A feature stage planned beside the earlier steps (``plan-features``): both stages are planned
as soon as the input is prepared, the plan is taken once (a retried feature step plans again),
and a planning error is the feature step's own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.lease import PoolLease
from virnucpro.errors import WorkerError
from virnucpro.pipeline.plan import plan_run
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.stages import prepare_stage
from virnucpro.pipeline.steps import FEATURES, PLAN_FEATURES, DirectSteps, PlannedAhead, Step, feature_step, plan_features
from virnucpro.pipeline.work_queue import BatchQueueManager, plan_stage


class _TimedSteps(DirectSteps):
    """Calls each step directly; notes when each feature step and each stage's planning started
    and ended, and whether a feature step was handed a plan it could take."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.handed_a_plan: dict[FeatureStage, bool] = {}
        self._lock = threading.Lock()

    def _timed(self, name: str, fn: Any, args: tuple[Any, ...]) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.times[name] = [started, time.perf_counter()]

    def run(self, step: Step, *args: Any) -> Any:
        if step in FEATURES.values():
            ahead = args[-1]
            self.handed_a_plan[args[2]] = isinstance(ahead, PlannedAhead) and ahead._plan is not None
            return self._timed(step.name, step.fn, args)
        return super().run(step, *args)

    def start(self, step: Step, *args: Any) -> Any:
        if step is PLAN_FEATURES:
            name = f"plan-{args[2].value}"
            return super().start(Step(name, lambda *a: self._timed(name, step.fn, a)), *args)
        return super().start(step, *args)


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("in") / "s.fa", 6)


def test_both_stages_are_planned_before_the_first_stage_ends(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    steps = _TimedSteps()
    result = run_prediction(cpu_config(sample, tmp_path / "out", demo_models), steps=steps)
    t = steps.times
    # ESM-2's planning began before DNABERT-S's stage ended (beside it, not after it)
    assert t["plan-esm"][0] < t["dnabert-features"][1]
    assert steps.handed_a_plan == {FeatureStage.DNABERT: True, FeatureStage.ESM: True}
    assert all(r.phase_seconds["plan"] < 0.5 for r in result.stages)  # nothing planned on the path
    assert all(r.frames and not r.shards_skipped for r in result.stages)


@pytest.fixture()
def prepared_run(sample: Path, demo_models, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = cpu_config(sample, tmp_path / "out", demo_models, shard_frames=4)
    return plan_run(config, False), prepare_stage(config)


def test_a_retried_feature_step_plans_again(prepared_run) -> None:  # type: ignore[no-untyped-def]
    plan, prepared = prepared_run
    stage = FeatureStage.DNABERT
    ahead = plan_features(plan, prepared, stage)
    assert ahead.error is None
    with PoolLease.for_run(False) as lease:
        first = feature_step(plan, prepared, stage, lease, None, ahead)
        assert first.shards_skipped == 0 and len(prepared.shards) > 1
        lost = prepared.paths.feature_file(stage.value, prepared.shards[0].name)
        lost.unlink()
        # the same (taken) plan handed again, as a Prefect retry does: the step looks at the
        # folder again instead of recomputing every shard the old plan listed
        again = feature_step(plan, prepared, stage, lease, None, ahead)
    assert lost.is_file()
    assert again.shards_skipped == len(prepared.shards) - 1


def test_a_planning_error_is_the_feature_steps_own(prepared_run) -> None:  # type: ignore[no-untyped-def]
    plan, prepared = prepared_run
    broken = prepared.shards[1].path
    broken.write_text("not a frame row\n")
    ahead = plan_features(plan, prepared, FeatureStage.ESM)
    assert ahead.error is not None and str(broken) in ahead.error
    assert ahead.take() is None
    with PoolLease.for_run(False) as lease, pytest.raises(WorkerError, match=str(broken)):
        feature_step(plan, prepared, FeatureStage.ESM, lease, None, ahead)


def test_a_stage_refuses_another_stages_plan(prepared_run) -> None:  # type: ignore[no-untyped-def]
    plan, prepared = prepared_run
    paths = OutputPaths.for_dir(plan.config.output_dir)
    other = plan_stage(FeatureStage.DNABERT, list(prepared.shards), paths)
    with BatchQueueManager(list(plan.devices), plan.spec) as queue, pytest.raises(ValueError, match="DNABERT-S"):
        queue.run_stage(FeatureStage.ESM, list(prepared.shards), paths, planned_ahead=other)
