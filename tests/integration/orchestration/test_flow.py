"""The ``virnucpro-predict`` flow against the package's real Prefect server, on the tiny demo models.

- the flow runs with ``persistent_models`` true and false and writes exactly ``virnucpro predict``'s
  outputs; with persistent models each worker loads each model once for both feature tasks;
- the ``gpu-memory-checkpoints`` and ``prediction-summary`` artifacts exist, read back via the API;
- the task runner reads the flow parameter and closes its pool even when the flow fails (its
  pickling: tests/unit/orchestration/test_task_runner.py);
- ``python flows/predict.py --help`` lists every flow parameter; ``--demo-if-missing`` works.
"""

from __future__ import annotations

import json
import os
import pickle
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
    MEMORY_ARTIFACT_KEY,
    MEMORY_COLUMNS,
    SUMMARY_ARTIFACT_KEY,
)
from virnucpro.orchestration.task_runner import GpuTaskRunner, current_gpu_runner  # noqa: E402

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


def test_persistent_flow_loads_each_model_once(flow_runs: dict) -> None:
    _, out = flow_runs[True]
    stages = _run_info(out)["stages"]
    assert [s["stage"] for s in stages] == ["dnabert", "esm"]
    for stage in stages:  # cumulative counts of the one pool that served both feature tasks
        assert stage["persistent"] is True
        assert stage["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}
    assert stages[0]["pool_start_seconds"] > 0 and stages[1]["pool_start_seconds"] == 0


def test_per_stage_flow_loads_one_model_per_stage(flow_runs: dict) -> None:
    _, out = flow_runs[False]
    stages = _run_info(out)["stages"]
    assert stages[0]["model_loads"] == {"cpu": {"dnabert": 1, "esm": 0}}
    assert stages[1]["model_loads"] == {"cpu": {"dnabert": 0, "esm": 1}}
    assert all(s["persistent"] is False for s in stages)


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-stage"])
def test_memory_checkpoint_artifact(flow_runs: dict, persistent: bool) -> None:
    state, out = flow_runs[persistent]
    artifacts = _artifacts(state.state_details.flow_run_id, MEMORY_ARTIFACT_KEY)
    assert len(artifacts) == 1
    artifact = artifacts[0]
    assert artifact.type == "table"
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert all(tuple(row) == MEMORY_COLUMNS for row in rows)
    assert [r["checkpoint"] for r in rows if r["device"] in ("-", rows[0]["device"])][:4] == list(CHECKPOINTS)
    checkpoints = _run_info(out)["memory_checkpoints"]
    if not checkpoints[0]["nvml_available"]:  # CPU machines: one row per checkpoint, saying why
        assert len(rows) == len(CHECKPOINTS)
        assert all(r["note"].startswith("NVML unavailable: ") and r["used_mib"] is None for r in rows)
    else:
        assert all(r["total_mib"] > 0 for r in rows)
    after_dnabert = next(r for r in rows if r["checkpoint"] == "after-dnabert")
    assert after_dnabert["stage"] == "DNABERT-S" and after_dnabert["torch_peak_mib"].startswith("cpu: ")


def test_prediction_summary_artifact(flow_runs: dict) -> None:
    state, out = flow_runs[True]
    artifacts = _artifacts(state.state_details.flow_run_id, SUMMARY_ARTIFACT_KEY)
    assert len(artifacts) == 1 and artifacts[0].type == "markdown"
    text = artifacts[0].data
    info = _run_info(out)
    assert "DEMO MODELS WITH RANDOM WEIGHTS" in text
    for model in info["models"].values():
        assert model["sha256"] in text
    calls = info["report"]["sequence_calls"]
    assert f"| {calls['virus']} | {calls['non-virus']} | {calls['no-call']} |" in text
    assert f"| {info['input']['records']} | {info['input']['chunks']} | {info['input']['frames']} |" in text
    for section in ("## Throughput per stage", "## Timings", "## Memory", "## Models", "## Outputs"):
        assert section in text
    assert "| DNABERT-S | persistent |" in text and "| ESM-2 | persistent |" in text
    assert str(out / "prediction_results.txt") in text


def test_flow_input_error_fails_the_run(harness, tmp_path: Path, model_params: dict) -> None:
    from flows.predict import predict_flow

    bad = tmp_path / "protein.fa"
    bad.write_text(">p1\nMKVLAAGIVGLLLAQWERTYIPASDFGHKLCVNM\n")
    state = predict_flow(input_fasta=bad, output_dir=tmp_path / "out", **model_params, return_state=True)
    assert state.is_failed()
    assert "InputError" in state.message and "looks like protein" in state.message


# -- the task runner -------------------------------------------------------------------------
_POOL_PIDS: list[int] = []


@task
def _noop() -> int:
    return 1


@flow(task_runner=GpuTaskRunner())
def _probe_flow(persistent_models: bool, config, fail: bool = False) -> dict:  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.prediction import plan_run

    runner = current_gpu_runner()
    before = runner.persistent_models
    _noop.submit().result()  # the first submit reads the flow run's parameters
    after = runner.persistent_models
    pool = runner.pool_for(plan_run(config))
    again = runner.pool_for(plan_run(config))
    blob = pickle.dumps(runner)  # the live pool stays out of the pickle
    _POOL_PIDS.extend(pool.pids() if pool else [])
    if fail:
        raise RuntimeError("flow failed on purpose")
    return {
        "before": before, "after": after, "pool": pool is not None, "same": pool is again,
        "pids": pool.pids() if pool else [], "running": bool(pool and pool.is_running),
        "pickled_pool": pickle.loads(blob).pool,
        "loads": [w.total_model_loads for w in pool.workers] if pool else [],
    }


@flow(task_runner=GpuTaskRunner(persistent_models=True))
def _discard_flow(config):  # type: ignore[no-untyped-def]
    """What a failed feature-task attempt does: discard the pool; the retry gets a fresh one."""
    from virnucpro.pipeline.prediction import plan_run

    runner = current_gpu_runner()
    plan = plan_run(config)
    broken = runner.pool_for(plan)
    runner.discard_pool(broken)
    fresh = runner.pool_for(plan)
    return broken.is_running, fresh is not broken, fresh.is_running, runner.pools_opened


def test_feature_tasks_retry_once_on_a_fresh_pool(
    harness, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    from flows.predict import build_config
    from virnucpro.orchestration.tasks import dnabert_features, esm_features

    assert dnabert_features.retries == esm_features.retries == 1
    config = build_config(sample_fasta, tmp_path / "out", persistent_models=True, **model_params)
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
    from flows.predict import build_config

    config = build_config(sample_fasta, tmp_path / "out", persistent_models=True, **model_params)
    seen = _probe_flow(persistent_models=True, config=config)
    assert seen["before"] is None and seen["after"] is True
    assert seen["pool"] and seen["same"] and seen["running"] and seen["pickled_pool"] is None
    assert seen["loads"] == [{"dnabert": 1, "esm": 1}]
    assert seen["pids"] and not any(_alive(pid) for pid in seen["pids"])  # closed at flow end

    off = _probe_flow(persistent_models=False, config=config)
    assert off["after"] is False and off["pool"] is False


def test_runner_closes_its_pool_when_the_flow_fails(
    harness, sample_fasta: Path, model_params: dict, tmp_path: Path
) -> None:
    from flows.predict import build_config

    config = build_config(sample_fasta, tmp_path / "out", persistent_models=True, **model_params)
    _POOL_PIDS.clear()
    state = _probe_flow(persistent_models=True, config=config, fail=True, return_state=True)
    assert state.is_failed() and "on purpose" in state.message
    assert _POOL_PIDS and not any(_alive(pid) for pid in _POOL_PIDS)


@flow(task_runner=GpuTaskRunner())
def _killed_worker_flow(persistent_models: bool, config):  # type: ignore[no-untyped-def]
    """The stages with the pool's worker SIGKILLed between the two feature tasks."""
    import signal

    from virnucpro.orchestration.tasks import (
        classify,
        dnabert_features,
        esm_features,
        prepare,
        report,
        resolve_plan,
    )

    plan = resolve_plan.submit(config).result()
    prepared = prepare.submit(config).result()
    dnabert = dnabert_features.submit(plan, prepared).result()
    runner = current_gpu_runner()
    for pid in runner.pool.pids():
        os.kill(pid, signal.SIGKILL)
    esm = esm_features.submit(plan, prepared).result()
    classify.submit(plan, prepared).result()
    report.submit(prepared).result()
    return dnabert, esm, runner.pools_opened


def test_a_killed_worker_does_not_fail_the_run(
    harness, sample_fasta: Path, model_params: dict, cli_output: Path, tmp_path: Path
) -> None:
    from flows.predict import build_config

    out = tmp_path / "out"
    config = build_config(sample_fasta, out, persistent_models=True, shard_frames=SHARD_FRAMES, **model_params)
    dnabert, esm, pools_opened = _killed_worker_flow(persistent_models=True, config=config)
    assert pools_opened == 1  # the pool replaced its dead worker; the run kept its pool
    assert esm.worker_restarts == 1 and esm.frames == dnabert.frames
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
