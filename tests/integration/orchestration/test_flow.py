"""The ``virnucpro-predict`` flow against the package's real Prefect server, on the tiny demo models.

- the flow runs with ``persistent_models`` true and false and writes exactly ``virnucpro predict``'s
  outputs; with persistent models each worker loads each model once for both feature tasks;
- the ``gpu-memory-checkpoints-<sample>``, ``prediction-summary-<sample>``, ``report-<sample>``
  and per-stage progress artifacts exist, read back via the API; the run is named after its input;
- the task runner reads the flow parameter and closes its pool even when the flow fails (its
  pickling: tests/unit/orchestration/test_task_runner.py);
- the calling parameters (preset, thresholds, region options) give the CLI's outputs;
- ``python flows/predict.py --help`` lists every flow parameter; ``--demo-if-missing`` works.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

from prefect import flow, task  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from tests.integration.pipeline_helpers import SHARD_FRAMES, CliRun  # noqa: E402
from virnucpro.orchestration.artifacts import (  # noqa: E402
    EMPTY,
    MEMORY_ARTIFACT_KEY,
    MEMORY_COLUMNS,
    REPORT_ARTIFACT_KEY,
    SUMMARY_ARTIFACT_KEY,
    sample_key,
)
from virnucpro.orchestration.task_runner import GpuTaskRunner, current_gpu_runner  # noqa: E402

SAMPLE_NAME = "s.fa"  # the session sample (tests/integration/conftest.py)
OUTPUT_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")
CHECKPOINTS = ("start", "after-dnabert", "after-esm", "end")


@pytest.fixture(scope="module")
def sample_fasta(sample: Path) -> Path:
    """The session's sample: the first 16 records of the shared real genome fragments."""
    return sample


@pytest.fixture(scope="module")
def model_params(demo_models) -> dict:  # type: ignore[no-untyped-def]
    return {
        "dnabert_model": demo_models.dnabert,
        "esm_model": demo_models.esm,
        "classifier": demo_models.classifier(500),
        "device": "cpu",
    }


@pytest.fixture(scope="module")
def cli_output(cli_standard_run: CliRun) -> Path:
    """``virnucpro predict`` on the same input, models and shards of 8 (a subprocess, as users run
    it): the session's standard run (tests/integration/conftest.py)."""
    assert cli_standard_run.exit_code == 0
    return cli_standard_run.output_dir


def _cli_predict(sample_fasta: Path, out: Path, model_params: dict, *options: str) -> None:
    cmd = [
        sys.executable, "-m", "virnucpro.cli", "predict", str(sample_fasta), "--output-dir", str(out),
        "--dnabert-model", str(model_params["dnabert_model"]), "--esm-model", str(model_params["esm_model"]),
        "--classifier", str(model_params["classifier"]), "--device", "cpu", "--precision", "fp32", *options,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def flow_runs(harness, sample_fasta: Path, model_params: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The flow once per ``persistent_models`` value: {value: (state, output dir)}."""
    from flows.predict import predict_flow

    runs = {}
    for persistent in (True, False):
        out = tmp_path_factory.mktemp(f"flow-{persistent}") / "out"
        state = predict_flow(input_fasta=sample_fasta, output_dir=out, persistent_models=persistent,
                             shard_frames=SHARD_FRAMES, **model_params, return_state=True)
        runs[persistent] = (state, out)
    return runs


def _artifacts(flow_run_id, key: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )


def _run_info(out: Path) -> dict:
    return json.loads((out / "run_info.json").read_text())


# -- the flow --------------------------------------------------------------------------------
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-stage"])
def test_flow_outputs_equal_cli(flow_runs: dict, cli_output: Path, persistent: bool) -> None:
    state, out = flow_runs[persistent]
    assert state.is_completed(), state.message
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (cli_output / name).read_bytes(), name
    info = _run_info(out)
    assert info["persistent_models"] is persistent
    assert info["demo_models"] is True
    assert (out / ".virnucpro_work" / "DONE").read_text().strip() == info["input"]["sha256"]


def test_model_paths_are_named_as_each_entry_point_takes_them(flow_runs: dict, cli_output: Path) -> None:
    _, out = flow_runs[True]
    assert [m["found_via"] for m in _run_info(out)["models"].values()] == [
        "parameter dnabert_model", "parameter esm_model", "parameter classifier"]
    assert [m["found_via"] for m in _run_info(cli_output)["models"].values()] == [
        "option --dnabert-model", "option --esm-model", "option --classifier"]


def test_persistent_flow_loads_each_model_once(flow_runs: dict) -> None:
    _, out = flow_runs[True]
    stages = _run_info(out)["stages"]
    assert [s["stage"] for s in stages] == ["dnabert", "esm"]
    for stage in stages:  # cumulative counts of the one pool that served both feature tasks
        assert stage["persistent"] is True
        assert stage["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}
    # the one pool started while the input was prepared (its own task), not inside a stage
    assert _run_info(out)["timings_seconds"]["start_workers"] > 0
    assert stages[0]["pool_start_seconds"] == stages[1]["pool_start_seconds"] == 0


def test_per_stage_flow_loads_one_model_per_stage(flow_runs: dict) -> None:
    _, out = flow_runs[False]
    stages = _run_info(out)["stages"]
    assert stages[0]["model_loads"] == {"cpu": {"dnabert": 1, "esm": 0}}
    assert stages[1]["model_loads"] == {"cpu": {"dnabert": 0, "esm": 1}}
    assert all(s["persistent"] is False for s in stages)


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-stage"])
def test_memory_checkpoint_artifact(flow_runs: dict, persistent: bool) -> None:
    state, out = flow_runs[persistent]
    artifacts = _artifacts(state.state_details.flow_run_id, sample_key(MEMORY_ARTIFACT_KEY, SAMPLE_NAME))
    assert len(artifacts) == 1
    artifact = artifacts[0]
    assert artifact.type == "table"
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert all(tuple(row) == MEMORY_COLUMNS for row in rows)
    assert [r["checkpoint"] for r in rows if r["device"] in (EMPTY, rows[0]["device"])][:4] == list(CHECKPOINTS)
    checkpoints = _run_info(out)["memory_checkpoints"]
    if not checkpoints[0]["nvml_available"]:  # CPU machines: one row per checkpoint, saying why
        assert len(rows) == len(CHECKPOINTS)
        assert all(r["note"].startswith("NVML unavailable: ") and r["used_mib"] is None for r in rows)
    else:
        assert all(r["total_mib"] > 0 for r in rows)
    after_dnabert = next(r for r in rows if r["checkpoint"] == "after-dnabert")
    assert after_dnabert["worker_peak_mib"].startswith("cpu: ")


def test_prediction_summary_artifact(flow_runs: dict) -> None:
    state, out = flow_runs[True]
    run_id = state.state_details.flow_run_id
    artifacts = _artifacts(run_id, sample_key(SUMMARY_ARTIFACT_KEY, SAMPLE_NAME))
    assert len(artifacts) == 1 and artifacts[0].type == "markdown"
    text = artifacts[0].data
    info = _run_info(out)
    assert "DEMO MODELS WITH RANDOM WEIGHTS" in text
    assert re.search(r"Peak memory per worker, MiB: cpu: \d+\.\d \(worker process resident memory", text)
    for model in info["models"].values():
        assert model["sha256"] in text
    calls = info["report"]["sequence_calls"]
    assert f"| {calls['virus']} | {calls['non-virus']} | {calls['no-call']} |" in text
    assert f"| {info['input']['records']} | {info['input']['chunks']} | {info['input']['frames']} |" in text
    for section in ("## Throughput per stage", "## Timings", "## Memory", "## Models", "## Outputs"):
        assert section in text
    assert "|  | DNABERT-S | ESM-2 |" in text and "| workers | persistent | persistent |" in text
    assert str(out / "prediction_results.txt") in text
    (link,) = _artifacts(run_id, sample_key(REPORT_ARTIFACT_KEY, SAMPLE_NAME))
    assert (out / "report.html").resolve().as_uri() in link.data
    for stage in ("dnabert", "esm"):  # one progress artifact per feature stage, finished
        (progress,) = _artifacts(run_id, sample_key(f"{stage}-progress", SAMPLE_NAME))
        assert progress.type == "progress" and progress.data == 100.0
        assert f"{info['input']['frames']}/{info['input']['frames']} frames" in progress.description
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).name == f"predict-{SAMPLE_NAME}"


def test_calling_parameters_act_as_the_cli_options(
    flow_runs: dict, cli_output: Path, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    """preset, min_region_length, smooth_window... as flow parameters: the CLI's outputs for the
    same options (each run reuses a finished run's work: only the report step runs again)."""
    from flows.predict import predict_flow

    flow_out, cli_out = tmp_path / "flow", tmp_path / "cli"
    shutil.copytree(flow_runs[False][1], flow_out)
    shutil.copytree(cli_output, cli_out)
    state = predict_flow(input_fasta=sample_fasta, output_dir=flow_out, **model_params, preset="conservative",
                         min_region_length=0, smooth_window=3, return_state=True)
    assert state.is_completed(), state.message
    _cli_predict(sample_fasta, cli_out, model_params, "--preset", "conservative", "--min-region-length", "0",
                 "--smooth-window", "3")
    for name in (*OUTPUT_FILES, "prediction_regions.tsv", "virus.fna", "provirus.fna"):
        assert (flow_out / name).read_bytes() == (cli_out / name).read_bytes(), name
    conservative = _run_info(flow_out)
    assert conservative["thresholds"]["preset"] == "conservative"
    assert conservative["regions"]["min_length"] == 0 and conservative["regions"]["smooth_window"] == 3
    default = _run_info(cli_output)["report"]["sequence_calls"]["virus"]
    assert conservative["report"]["sequence_calls"]["virus"] < default


def test_flow_input_error_fails_the_run(harness, tmp_path: Path, model_params: dict) -> None:
    from flows.predict import predict_flow

    bad = tmp_path / "protein.fa"
    bad.write_text(">p1\nMKVLAAGIVGLLLAQWERTYIPASDFGHKLCVNM\n")
    state = predict_flow(input_fasta=bad, output_dir=tmp_path / "out", **model_params, return_state=True)
    assert state.is_failed()
    assert "InputError" in state.message and "looks like protein" in state.message


# -- the task runner -------------------------------------------------------------------------
def _config(sample_fasta: Path, out: Path, model_params: dict, **extra):  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.parameters import build_config

    return build_config({"input_fasta": sample_fasta, "output_dir": out, **model_params, **extra})


_POOL_PIDS: list[int] = []


@task
def _noop() -> int:
    return 1


@flow(task_runner=GpuTaskRunner())
def _probe_flow(persistent_models: bool, config, fail: bool = False) -> dict:  # type: ignore[no-untyped-def]
    """What the two feature tasks of a run get from the runner's lease."""
    from virnucpro.pipeline.plan import plan_run
    from virnucpro.pipeline.stage import FeatureStage

    runner = current_gpu_runner()
    _noop.submit().result()  # the first submit makes the lease from the flow run's parameters
    lease = runner.lease
    plan = plan_run(config, lease.persistent)
    pools = []
    for stage in FeatureStage:
        with lease.stage_pool(list(plan.devices), plan.spec, stage) as handle:
            pools.append(handle.pool)
            _POOL_PIDS.extend(handle.pool.pids())
    blob = pickle.dumps(runner)  # the live pool stays out of the pickle
    if fail:
        raise RuntimeError("flow failed on purpose")
    return {
        "persistent": lease.persistent, "same": pools[0] is pools[1],
        "pids": [pid for pool in pools for pid in pool.pids()],
        "running": [pool.is_running for pool in pools],
        "pickled_lease_fresh": pickle.loads(blob).lease is not lease,
        "loads": [w.total_model_loads for w in pools[-1].workers],
        "opened": lease.pools_opened,
    }


@flow(task_runner=GpuTaskRunner(persistent_models=True))
def _discard_flow(config):  # type: ignore[no-untyped-def]
    """What a failed feature-task attempt does: the lease discards the pool; the retry gets a fresh one."""
    from virnucpro.pipeline.plan import plan_run
    from virnucpro.pipeline.stage import FeatureStage

    lease = current_gpu_runner().lease
    plan = plan_run(config, True)
    with pytest.raises(RuntimeError, match="attempt failed"):
        with lease.stage_pool(list(plan.devices), plan.spec, FeatureStage.DNABERT) as broken:
            raise RuntimeError("attempt failed")
    with lease.stage_pool(list(plan.devices), plan.spec, FeatureStage.DNABERT) as fresh:
        fresh_running = fresh.pool.is_running
    return broken.pool.is_running, fresh.pool is not broken.pool, fresh_running, lease.pools_opened


def test_feature_tasks_retry_once_on_a_fresh_pool(
    harness, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    from virnucpro.orchestration.tasks import STEP_TASKS

    assert STEP_TASKS["dnabert-features"].retries == STEP_TASKS["esm-features"].retries == 1
    config = _config(sample_fasta, tmp_path / "out", model_params, persistent_models=True)
    broken_running, replaced, fresh_running, opened = _discard_flow(config=config)
    assert not broken_running and replaced and fresh_running and opened == 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_runner_owns_one_pool_per_flow_run(
    harness, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    config = _config(sample_fasta, tmp_path / "out", model_params, persistent_models=True)
    seen = _probe_flow(persistent_models=True, config=config)
    assert seen["persistent"] and seen["same"] and seen["opened"] == 1
    assert all(seen["running"]) and seen["pickled_lease_fresh"]
    assert seen["loads"] == [{"dnabert": 1, "esm": 1}]
    assert seen["pids"] and not any(_alive(pid) for pid in seen["pids"])  # closed at flow end

    off = _probe_flow(persistent_models=False, config=config)
    assert not off["persistent"] and not off["same"] and off["opened"] == 2  # a pool per stage
    assert off["running"] == [False, False]  # each closed when its stage ended
    assert off["loads"] == [{"dnabert": 0, "esm": 1}]


def test_runner_closes_its_pool_when_the_flow_fails(
    harness, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    config = _config(sample_fasta, tmp_path / "out", model_params, persistent_models=True)
    _POOL_PIDS.clear()
    state = _probe_flow(persistent_models=True, config=config, fail=True, return_state=True)
    assert state.is_failed() and "on purpose" in state.message
    assert _POOL_PIDS and not any(_alive(pid) for pid in _POOL_PIDS)


class _KillAfterDnabert:
    """The flow's step caller, SIGKILLing the pool's workers once the DNABERT-S task is done."""

    def __init__(self) -> None:
        from virnucpro.orchestration.tasks import PrefectSteps

        self.steps = PrefectSteps()

    def run(self, step, *args):  # type: ignore[no-untyped-def]
        import signal

        from virnucpro.pipeline.stage import FeatureStage
        from virnucpro.pipeline.steps import FEATURES

        value = self.steps.run(step, *args)
        if step is FEATURES[FeatureStage.DNABERT]:
            lease = args[3]
            for pid in lease.pool.pids():
                os.kill(pid, signal.SIGKILL)
        return value

    def start(self, step, *args):  # type: ignore[no-untyped-def]
        return self.steps.start(step, *args)


@flow(task_runner=GpuTaskRunner())
def _killed_worker_flow(persistent_models: bool, config):  # type: ignore[no-untyped-def]
    """The run's steps as tasks, with the pool's worker SIGKILLed between the two feature tasks."""
    from virnucpro.pipeline.prediction import run_prediction

    lease = current_gpu_runner().lease
    result = run_prediction(config, lease=lease, steps=_KillAfterDnabert())
    return result.stages[0], result.stages[1], lease.pools_opened


def test_a_killed_worker_does_not_fail_the_run(
    harness, sample_fasta: Path, model_params: dict, cli_output: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = _config(sample_fasta, out, model_params, persistent_models=True, shard_frames=SHARD_FRAMES)
    dnabert, esm, pools_opened = _killed_worker_flow(persistent_models=True, config=config)
    assert pools_opened == 1  # the pool replaced its dead worker; the run kept its pool
    # the dead worker is replaced once: between the stages (the pool sees the death at once) or
    # when the ESM-2 stage hands it its first shard
    assert dnabert.worker_restarts + esm.worker_restarts <= 1 and esm.frames == dnabert.frames
    assert esm.model_loads == {"cpu": {"dnabert": 2, "esm": 2}}  # the replacement loaded both again
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv"):
        assert (out / name).read_bytes() == (cli_output / name).read_bytes()


# -- python flows/predict.py -----------------------------------------------------------------
def test_script_help_lists_every_flow_parameter() -> None:
    from flows.predict import predict_flow

    done = subprocess.run([sys.executable, str(REPO_ROOT / "flows" / "predict.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = list(predict_flow.parameters.properties)
    assert {"input_fasta", "output_dir", "chunk_length", "persistent_models", "dnabert_model",
            "esm_model", "classifier", "device", "precision", "gpus", "toks_per_batch", "resume"} <= set(names)
    for name in names:
        assert name in done.stdout, name
        if name != "input_fasta":
            assert "--" + name.replace("_", "-") in done.stdout, name
    assert "--demo-if-missing" in done.stdout


def test_script_gives_a_fresh_ephemeral_server_time_to_migrate() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    key = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    # one interpreter, two imports of the script's module: unset, then a site's own value
    code = (f"import importlib, os, flows.predict as p; print(os.environ[{key!r}]); "
            f"os.environ[{key!r}] = '33'; importlib.reload(p); print(os.environ[{key!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr
    default, site_value = done.stdout.split()
    assert int(default) >= 60  # Prefect's own 20 s timed out on a fresh 2-core machine
    assert site_value == "33"  # a site's own value wins


@pytest.mark.filterwarnings("ignore:Logger 'virnucpro")
def test_demo_if_missing_builds_demo_models_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_fasta: Path, model_params: dict
) -> None:
    from flows import predict as predict_script

    for name in ("VIRNUCPRO_DNABERT_MODEL", "VIRNUCPRO_ESM_MODEL", "VIRNUCPRO_CLASSIFIER", "VIRNUCPRO_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    cache = tmp_path / "cache" / "demo"
    monkeypatch.setenv("VIRNUCPRO_DEMO_MODELS_DIR", str(cache))
    base = {"input_fasta": sample_fasta, "output_dir": tmp_path / "o", "chunk_length": 500}
    params = predict_script._models_or_demo(dict(base))
    assert params["dnabert_model"] == cache / "dnabert_s"
    assert params["esm_model"].parent == cache and params["classifier"] == cache / "500_model.pth"
    stamp = params["esm_model"].stat().st_mtime_ns
    again = predict_script._models_or_demo(dict(base))  # reused, not rebuilt
    assert again == params and params["esm_model"].stat().st_mtime_ns == stamp
    given = {**base, **{k: v for k, v in model_params.items() if k != "device"}}
    assert predict_script._models_or_demo(dict(given)) == given  # models found: used as given
