"""PoolLease, the one owner of a pool's life, with real spawned CPU workers on tiny models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from virnucpro.config import DeviceKind, ModelPaths, RunConfig
from virnucpro.pipeline.lease import LeaseMode, PoolLease
from virnucpro.pipeline.plan import plan_run
from virnucpro.pipeline.stage import FeatureStage


@pytest.fixture(scope="module")
def plan(demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("lease")
    config = RunConfig(
        input_fasta=tmp / "x.fa", output_dir=tmp / "out", device=DeviceKind.CPU,
        models=ModelPaths(demo_models.dnabert, demo_models.esm, demo_models.classifier(500)),
    )
    return plan_run(config, True)


def _use(lease: PoolLease, plan, stage: FeatureStage):  # type: ignore[no-untyped-def]
    with lease.stage_pool(list(plan.devices), plan.spec, stage) as handle:
        assert handle.pool.is_running
    return handle


def test_per_stage_starts_and_closes_a_pool_per_stage(plan) -> None:  # type: ignore[no-untyped-def]
    lease = PoolLease.per_stage()
    first = _use(lease, plan, FeatureStage.DNABERT)
    second = _use(lease, plan, FeatureStage.ESM)
    assert first.pool is not second.pool and not first.pool.is_running and not second.pool.is_running
    assert first.pool.workers[0].ready.loaded == ("dnabert",)  # only the stage's model
    assert second.pool.workers[0].ready.loaded == ("esm",)
    assert first.ended and first.start_seconds > 0 and lease.pools_opened == 2
    assert lease.pool is None and not lease.persistent
    with pytest.raises(ValueError, match="only an owned lease can be lent"):
        PoolLease(LeaseMode.LENT, owner=lease)
    with pytest.raises(RuntimeError, match="per-stage lease"):
        lease.start(list(plan.devices), plan.spec)


def test_owned_keeps_one_pool_and_lends_it(plan) -> None:  # type: ignore[no-untyped-def]
    with PoolLease.owned() as night:
        assert night.start(list(plan.devices), plan.spec) > 0
        resident = night.pool
        assert night.start(list(plan.devices), plan.spec) == 0.0  # already running
        for _ in range(2):  # two samples of a night, each on a lent view
            sample = night.lend()
            assert sample.mode is LeaseMode.LENT and sample.persistent
            a = _use(sample, plan, FeatureStage.DNABERT)
            b = _use(sample, plan, FeatureStage.ESM)
            assert a.pool is b.pool is resident and a.start_seconds == 0.0
            sample.close()  # a lent lease closes nothing
            assert resident.is_running
        assert night.pools_opened == 1
        assert night.model_loads() == {"cpu": {"dnabert": 1, "esm": 1}}
        assert resident.workers[0].ready.loaded == ("dnabert", "esm")
    assert not resident.is_running  # the owner closed it
    with pytest.raises(RuntimeError, match="lease was closed"):
        _use(night, plan, FeatureStage.DNABERT)


def test_a_failed_stage_discards_the_pool(plan) -> None:  # type: ignore[no-untyped-def]
    with PoolLease.owned() as lease:
        with pytest.raises(ZeroDivisionError):
            with lease.stage_pool(list(plan.devices), plan.spec, FeatureStage.DNABERT) as broken:
                1 / 0  # noqa: B018
        assert not broken.pool.is_running and lease.pool is None
        fresh = _use(lease.lend(), plan, FeatureStage.DNABERT)  # a lent view asks its owner
        assert fresh.pool is not broken.pool and fresh.pool.is_running and lease.pools_opened == 2


def test_other_settings_restart_the_resident_pool(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with PoolLease.owned() as lease:
        first = _use(lease, plan, FeatureStage.ESM)
        other = replace(plan.spec, toks_per_batch=1234)
        with lease.stage_pool(list(plan.devices), other, FeatureStage.ESM) as second:
            assert second.pool is not first.pool and second.pool.spec.toks_per_batch == 1234
        assert not first.pool.is_running and lease.pools_opened == 2


def test_close_beside_ends_the_workers_in_a_thread_and_close_waits(plan) -> None:  # type: ignore[no-untyped-def]
    lease = PoolLease.owned()
    _use(lease, plan, FeatureStage.DNABERT)
    resident = lease.pool
    assert resident is not None
    lease.close_beside()
    assert lease.pool is None  # no later stage can get it
    with pytest.raises(RuntimeError, match="lease was closed"):
        _use(lease, plan, FeatureStage.ESM)
    closing = lease._closing
    assert closing is not None and closing.name == "pool-close"
    lease.close_beside()  # a second call does nothing
    assert lease._closing is closing
    lease.close()
    assert not closing.is_alive() and not resident.is_running and lease._closing is None
    # a lent lease and a per-stage one have nothing to close
    with PoolLease.owned() as night:
        night.start(list(plan.devices), plan.spec)
        lent = night.lend()
        lent.close_beside()
        assert night.pool is not None and night.pool.is_running
    PoolLease.per_stage().close_beside()
