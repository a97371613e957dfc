"""GpuTaskRunner as settings: it pickles, duplicates and compares without its live lease."""

from __future__ import annotations

import pickle

from virnucpro.orchestration.task_runner import GpuTaskRunner
from virnucpro.pipeline.lease import LeaseMode


def test_runner_pickles_and_duplicates() -> None:
    runner = GpuTaskRunner(max_workers=3, persistent_models=True)
    clone = pickle.loads(pickle.dumps(runner))
    assert clone == runner
    twin = runner.duplicate()
    assert twin == runner and twin is not runner
    with runner:  # a started runner (thread pool, lease) pickles too, as settings only
        lease = runner.lease
        started = pickle.loads(pickle.dumps(runner))
    assert lease.mode is LeaseMode.OWNED
    assert started == runner and started.lease is not lease
    assert GpuTaskRunner(persistent_models=False) != runner
    import cloudpickle

    from flows.predict import predict_flow

    shipped = cloudpickle.loads(cloudpickle.dumps(predict_flow))  # as flow.serve()/deployments do
    assert isinstance(shipped.task_runner, GpuTaskRunner) and shipped.task_runner == predict_flow.task_runner
