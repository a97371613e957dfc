"""GpuTaskRunner as settings: it pickles, duplicates and compares without its live pool."""

from __future__ import annotations

import pickle

from virnucpro.orchestration.task_runner import GpuTaskRunner


def test_runner_pickles_and_duplicates() -> None:
    runner = GpuTaskRunner(max_workers=3, persistent_models=True)
    clone = pickle.loads(pickle.dumps(runner))
    assert clone == runner and clone.persistent_models is True and clone.pool is None
    twin = runner.duplicate()
    assert twin == runner and twin is not runner
    with runner:  # a started runner (thread pool, lock) pickles too, as settings only
        started = pickle.loads(pickle.dumps(runner))
    assert started == runner and started.pool is None
    assert GpuTaskRunner(persistent_models=False) != runner
    import cloudpickle

    from flows.predict import predict_flow

    shipped = cloudpickle.loads(cloudpickle.dumps(predict_flow))  # as flow.serve()/deployments do
    assert isinstance(shipped.task_runner, GpuTaskRunner) and shipped.task_runner == predict_flow.task_runner
