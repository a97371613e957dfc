"""The persistent worker pool for real: spawned processes, tiny real-architecture models.

CPU variants run everywhere (CI); ``@pytest.mark.gpu`` variants need CUDA and run on the device
machine. Fault paths (SIGKILL mid-shard, CUDA OOM, a shard that keeps failing) are exercised with
the worker's ``VIRNUCPRO_FAULTS`` knob, which makes the worker really die / really raise.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.integration.pipeline_helpers import (
    SHARD_FRAMES,
    CliRun,
    copy_features,
    cpu_config,
    feature_matrix,
    captured_logs,
    invoke_cli,
    proc_alive,
)
from virnucpro.config import DeviceKind
from virnucpro.errors import WorkerError
from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.persistent_pool import ALLOCATOR_CONF, PersistentWorkerPool
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.plan import plan_run
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.steps import PERSISTENT_CPU_LOG_LINE, PERSISTENT_LOG_LINE
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.stages import prepare_stage
from virnucpro.pipeline.work_queue import BatchQueueManager

OUTPUTS = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")

torch = pytest.importorskip("torch")


def gpu(test):  # type: ignore[no-untyped-def]
    """``@pytest.mark.gpu``, skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


@pytest.fixture(scope="module")
def standard_run(cli_standard_run: CliRun) -> dict:
    """The session's standard-mode run (``virnucpro predict --no-persistent-models --shard-frames
    8``, tests/integration/conftest.py): its run_info.json; its outputs are in ``output_dir``."""
    return {**cli_standard_run.info, "output_dir": cli_standard_run.output_dir}


@pytest.fixture(scope="module")
def persistent_logged(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``run_prediction(persistent_models=True)`` on the same input and shards, and its log lines."""
    out = tmp_path_factory.mktemp("persistent")
    with captured_logs() as lines:
        result = run_prediction(cpu_config(sample, out, demo_models, shard_frames=SHARD_FRAMES),
                                persistent_models=True)
    return result, lines


@pytest.fixture(scope="module")
def persistent_run(persistent_logged):  # type: ignore[no-untyped-def]
    return persistent_logged[0]


def test_a_run_that_owns_its_pool_ends_the_workers_beside_classify_and_report(persistent_logged) -> None:  # type: ignore[no-untyped-def]
    """The workers are stopped after the last feature stage, while classify and report run, and
    before the end checkpoint (which so sees the GPU without them in every run)."""
    _, lines = persistent_logged

    def first(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"no log line with {text!r}"
        return found[0]

    stopped = first("stopped 1 worker(s)")
    assert first("memory checkpoint after-esm") < stopped < first("memory checkpoint end")
    assert sum("stopped 1 worker(s)" in line for line in lines) == 1


def _pool(demo_models, tmp_path: Path, devices=None) -> tuple[PersistentWorkerPool, object]:  # type: ignore[no-untyped-def]
    config = cpu_config(tmp_path / "x.fa", tmp_path / "out", demo_models, persistent_models=True)
    plan = plan_run(config, True)
    return PersistentWorkerPool(devices or list(plan.devices), plan.spec), plan


def test_persistent_pool_initialization(demo_models, tmp_path: Path) -> None:
    pool, _ = _pool(demo_models, tmp_path)
    with pool:
        (info,) = pool.workers
        assert info.ready is not None
        assert proc_alive(info.ready.pid)
        assert info.ready.loaded == ("dnabert", "esm")  # both models resident from the start
        assert info.total_model_loads == {"dnabert": 1, "esm": 1}
        assert info.ready.allocator_conf == ALLOCATOR_CONF  # expandable segments applied
        assert info.ready.cuda_visible_devices == ""  # a CPU worker sees no GPU
        assert info.ready.pid != __import__("os").getpid()


def test_a_run_s_own_start_is_ready_for_the_first_stage_and_warms_the_other_beside_it(
        sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = cpu_config(sample, tmp_path / "out", demo_models, shard_frames=SHARD_FRAMES, persistent_models=True)
    prepared = prepare_stage(config)
    plan = plan_run(config, True)
    with PoolLease.owned() as lease:
        lease.start(list(plan.devices), plan.spec, first_stage_ready=True)
        (info,) = lease.pool.workers
        assert info.ready.loaded == ("dnabert", "esm")  # both read (a bad file still fails the start)
        assert "dnabert warm-up" in info.start_phases and "esm read" in info.start_phases
        assert "esm warm-up" not in info.start_phases  # not yet: the first stage comes first
        queue = BatchQueueManager(list(plan.devices), plan.spec, lease=lease)
        queue.run_stage(FeatureStage.DNABERT, list(prepared.shards), OutputPaths.for_dir(tmp_path / "out"))
        report = queue.run_stage(FeatureStage.ESM, list(prepared.shards), OutputPaths.for_dir(tmp_path / "out"))
        assert report.frames == prepared.n_frames
        assert "esm warm-up" in info.start_phases  # warmed beside the first stage, reported
        assert info.total_model_loads == {"dnabert": 1, "esm": 1}  # read once, warmed once
    with PoolLease.owned() as whole:  # a pool started ahead of a timed section: wholly warm
        whole.start(list(plan.devices), plan.spec)
        assert {"dnabert warm-up", "esm warm-up"} <= set(whole.pool.workers[0].start_phases)


def test_persistent_vs_standard_output_equivalence(persistent_run, standard_run: dict) -> None:  # type: ignore[no-untyped-def]
    persistent_dir = persistent_run.paths.output_dir
    standard_dir = standard_run["output_dir"]
    for stage in ("dnabert", "esm"):
        a, b = feature_matrix(standard_dir, stage), feature_matrix(persistent_dir, stage)
        assert a.keys() == b.keys() and len(a) == standard_run["input"]["frames"] > 20
        for frame_id in a:
            np.testing.assert_array_equal(a[frame_id], b[frame_id])  # bit for bit
    for name in OUTPUTS:
        assert (standard_dir / name).read_bytes() == (persistent_dir / name).read_bytes()
    # persistent: one pool for both stages, each model loaded once; standard: a pool per stage
    loads_p = [s.model_loads for s in persistent_run.stages]
    assert loads_p[0] == loads_p[1] == {"cpu": {"dnabert": 1, "esm": 1}}
    loads_s = [s["model_loads"] for s in standard_run["stages"]]
    assert loads_s == [{"cpu": {"dnabert": 1, "esm": 0}}, {"cpu": {"dnabert": 0, "esm": 1}}]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_management(sample: Path, demo_models, tmp_path: Path) -> None:
    """Several stage cycles on one pool: every boundary is acknowledged, memory does not grow."""
    config = cpu_config(sample, tmp_path / "out", demo_models, shard_frames=SHARD_FRAMES, persistent_models=True)
    prepared = prepare_stage(config)
    assert len(prepared.shards) >= 4
    plan = plan_run(config, True)
    rss = []
    with PoolLease.owned() as lease:
        queue = BatchQueueManager(list(plan.devices), plan.spec, lease=lease)
        for cycle in range(4):
            paths = OutputPaths.for_dir(tmp_path / f"cycle{cycle}")
            for stage in FeatureStage:
                report = queue.run_stage(stage, list(prepared.shards), paths)
                assert report.frames == prepared.n_frames
            rss.append(_rss_kib(lease.pool.pids()[0]))
        queue.close()
        pool = lease.pool
        assert pool is not None and pool.is_running  # the caller's lease outlives the queue
        assert pool.workers[0].total_model_loads == {"dnabert": 1, "esm": 1}
        assert lease.pools_opened == 1
    assert not pool.is_running  # closing the lease closed its pool
    # after the first cycle warmed up allocator caches, memory is flat (10% slack)
    assert max(rss[1:]) <= rss[1] * 1.10, rss


def test_pool_lifecycle(demo_models, tmp_path: Path) -> None:
    pool, _ = _pool(demo_models, tmp_path)
    pool.start()
    pids = pool.pids()
    assert pids and all(proc_alive(p) for p in pids)
    pool.close()
    assert not any(proc_alive(p) for p in pids)
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        pool.submit(FeatureStage.ESM, tmp_path / "a", tmp_path / "b")

    pool2, _ = _pool(demo_models, tmp_path)
    with pytest.raises(ValueError, match="stage blew up"):
        with pool2:
            pids2 = pool2.pids()
            raise ValueError("stage blew up")
    assert pids2 and not any(proc_alive(p) for p in pids2)  # released after an exception too


@pytest.fixture(scope="module")
def cli_persistent_run(sample: Path, demo_model_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    out = tmp_path_factory.mktemp("cli-persistent") / "out"
    return invoke_cli(["-v", "predict", str(sample), "--output-dir", str(out), "--device", "cpu",
                       *demo_model_args, "--shard-frames", str(SHARD_FRAMES), "--persistent-models"], out)


@pytest.mark.parametrize("flag", ["--persistent-models", "--no-persistent-models"])
def test_cli_persistent_flag(flag: str, cli_persistent_run: CliRun, cli_standard_run: CliRun,
                             persistent_run) -> None:  # type: ignore[no-untyped-def]
    # --no-persistent-models: the session's standard run; each is compared with the other mode
    run, other = ((cli_persistent_run, cli_standard_run.output_dir) if flag == "--persistent-models"
                  else (cli_standard_run, persistent_run.paths.output_dir))
    assert flag in run.args and "-v" in run.args
    assert run.exit_code == 0, run.output
    out = run.output_dir
    info = json.loads((out / "run_info.json").read_text())
    persistent = flag == "--persistent-models"
    assert info["persistent_models"] is persistent
    assert (PERSISTENT_CPU_LOG_LINE in run.log) is persistent  # a CPU worker: no GPU memory
    assert PERSISTENT_LOG_LINE not in run.log  # the GPU wording only where a GPU runs
    loads = [s["model_loads"]["cpu"] for s in info["stages"]]
    if persistent:
        assert loads == [{"dnabert": 1, "esm": 1}] * 2
    else:
        assert loads == [{"dnabert": 1, "esm": 0}, {"dnabert": 0, "esm": 1}]
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (other / name).read_bytes()


def test_worker_killed_mid_shard_is_replaced(sample: Path, demo_models, standard_run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "kill-once"
    marker.touch()
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"kill_marker": str(marker)}))
    result = run_prediction(cpu_config(sample, tmp_path / "out", demo_models, shard_frames=SHARD_FRAMES), persistent_models=True)
    assert not marker.exists()  # the worker really took the SIGKILL path
    assert result.stages[0].worker_restarts == 1
    for name in OUTPUTS:  # nothing lost, nothing duplicated
        assert (tmp_path / "out" / name).read_bytes() == (standard_run["output_dir"] / name).read_bytes()


def test_oom_halves_the_batch_and_retries(sample: Path, demo_models, standard_run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"oom_above_tokens": 600}))
    result = run_prediction(
        cpu_config(sample, tmp_path / "out", demo_models, shard_frames=SHARD_FRAMES, toks_per_batch=4096),
        persistent_models=True,
    )
    assert result.stages[1].oom_retries > 0  # ESM batches of >600 tokens were halved
    esm_a = feature_matrix(standard_run["output_dir"], "esm")
    esm_b = feature_matrix(tmp_path / "out", "esm")
    for frame_id in esm_a:
        np.testing.assert_allclose(esm_a[frame_id], esm_b[frame_id], rtol=0, atol=1e-5)
    for name in ("prediction_results_highestscore.csv", "prediction_sequences.tsv"):
        assert (tmp_path / "out" / name).read_text().splitlines()[0] == (standard_run["output_dir"] / name).read_text().splitlines()[0]


def test_shard_failing_three_times_names_its_frames(sample: Path, demo_models, standard_run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    victim = next(iter(feature_matrix(standard_run["output_dir"], "dnabert")))
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"fail_frame": victim}))
    with pytest.raises(WorkerError, match=rf"failed 3 times .*{victim}"):
        run_prediction(cpu_config(sample, tmp_path / "out", demo_models, shard_frames=SHARD_FRAMES), persistent_models=True)
    assert not (tmp_path / "out" / "prediction_results.txt").exists()  # nothing that looks complete


def test_resume_skips_finished_shards(sample: Path, demo_models, standard_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    config = cpu_config(sample, out, demo_models, shard_frames=SHARD_FRAMES)
    # the first run is the session's standard run (same input, chunk length and shards)
    assert standard_run["stages"][0]["shards_skipped"] == 0
    copy_features(standard_run["output_dir"], out)
    # simulate a crash after the DNABERT-S stage: drop ESM features and the outputs (none copied)
    for path in (out / ".virnucpro_work" / "features" / "esm").glob("*.npz"):
        path.unlink()
    assert not (out / "prediction_results.txt").exists()
    again = run_prediction(config)
    assert again.prepared.reused
    assert again.stages[0].shards_skipped == again.stages[0].shards_total  # DNABERT not recomputed
    assert again.stages[1].shards_skipped == 0
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (standard_run["output_dir"] / name).read_bytes()


# -- GPU variants (device machine) ----------------------------------------------------------
@gpu
def test_gpu_persistent_vs_standard_equivalence(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = run_prediction(cpu_config(sample, tmp_path / "s", demo_models, device=DeviceKind.CUDA), persistent_models=False)
    b = run_prediction(cpu_config(sample, tmp_path / "p", demo_models, device=DeviceKind.CUDA), persistent_models=True)
    for stage in ("dnabert", "esm"):
        fa, fb = feature_matrix(tmp_path / "s", stage), feature_matrix(tmp_path / "p", stage)
        for frame_id in fa:
            np.testing.assert_array_equal(fa[frame_id], fb[frame_id])
    for name in OUTPUTS:
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "p" / name).read_bytes()
    assert b.stages[0].model_loads == b.stages[1].model_loads
    assert all(v == {"dnabert": 1, "esm": 1} for v in b.stages[1].model_loads.values())
    assert all(p > 0 for p in b.stages[1].worker_peak_mib.values())


@gpu
def test_gpu_memory_released_between_standard_stages(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.memory import read_checkpoint

    before = read_checkpoint("before")
    run_prediction(cpu_config(sample, tmp_path / "s", demo_models, device=DeviceKind.CUDA), persistent_models=False)
    after = read_checkpoint("after")
    assert after.nvml_available
    ours = [p for d in after.devices for p in d.processes if p.pid != __import__("os").getpid()]
    before_pids = {p.pid for d in before.devices for p in d.processes}
    assert not [p for p in ours if p.pid not in before_pids]  # every worker's memory is gone


@gpu
def test_gpu_two_devices_equal_one(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    one = run_prediction(cpu_config(sample, tmp_path / "one", demo_models, device=DeviceKind.CUDA, gpus=(0,), shard_frames=8), persistent_models=True)
    two = run_prediction(cpu_config(sample, tmp_path / "two", demo_models, device=DeviceKind.CUDA, gpus=(0, 1), shard_frames=8), persistent_models=True)
    assert len(two.stages[1].model_loads) == 2  # both GPUs served
    assert all(v["esm"] == 1 for v in two.stages[1].model_loads.values())
    for name in OUTPUTS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert one.prepared.n_frames == two.prepared.n_frames
