"""Deployments for real: ``prefect server start`` on 127.0.0.1, ``prefect deploy --all`` from
``prefect.yaml``, a worker started the plain Prefect way (``prefect worker start --pool
virnucpro-gpu``, no ``VIRNUCPRO_HOME``), and runs made with ``prefect deployment run``.

The deploy happens from a copy of the checkout, which is then RENAMED (and its version changed)
before the worker starts with the renamed copy as its installed package (``PYTHONPATH``): a run
only completes if the pull step holds no path of the deploying machine and finds the checkout
from the installed package; it then says that its code is not the deployed version. The copies'
package versions carry markers that run_info.json must show, so the code that ran is the worker
copy's, not the developer checkout's.

One worker serves all deployment tests (a module fixture), on the server that the whole package
shares (``prefect_server`` in conftest.py); everything started is stopped by process group. The multi-worker night is ``test_lab_night.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.orchestration.server import PrefectServer, stop

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSION_MARKER = "+deploytest"
WORKER_MARKER = "+deploytest.worker"  # the worker's checkout is a later version than the deployed one
RUN_TIMEOUT_S = 420
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", ".hypothesis",
    "build", "dist", "example_output", "runs", "out", ".carry", ".whl", ".gl", ".ruff_cache", ".mypy_cache",
)


@dataclass
class Site:
    """A running server + worker, and where things are."""

    url: str
    env: dict[str, str]
    checkout: Path
    deployed_from: Path
    worker_log: Path
    inbox: Path
    outbox: Path
    data: Path

    def prefect(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), *args], cwd=cwd or self.checkout,
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout + done.stderr

    def run_deployment(self, name: str, job_variables: dict | None = None, **params: object) -> str:
        args = ["deployment", "run", name]
        for key, value in params.items():
            args += ["-p", f"{key}={value}"]
        for key, value in (job_variables or {}).items():
            args += ["--job-variable", f"{key}={json.dumps(value)}"]
        out = self.prefect(*args)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert match, out
        return match.group(1)

    def wait(self, flow_run_id: str, timeout: float = RUN_TIMEOUT_S, expect_completed: bool = True):  # type: ignore[no-untyped-def]
        from prefect.client.orchestration import get_client

        async def poll():  # type: ignore[no-untyped-def]
            async with get_client() as client:
                deadline = time.monotonic() + timeout
                while True:
                    run = await client.read_flow_run(flow_run_id)
                    if run.state is not None and run.state.is_final():
                        return run
                    if time.monotonic() > deadline:
                        return run
                    await asyncio.sleep(2)

        run = self.api(poll)
        log = self.worker_log.read_text(errors="replace")[-6000:]
        assert run.state is not None and run.state.is_final(), f"not finished in {timeout} s\n{log}"
        if expect_completed:
            assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{log}"
        return run

    def logs(self, flow_run_id: str) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async def read():  # type: ignore[no-untyped-def]
            async with get_client() as client:
                return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                              limit=200)

        return self.api(read)

    def api(self, make_coro):  # type: ignore[no-untyped-def]
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            return asyncio.run(make_coro())

    def artifacts(self, flow_run_id: str, key: str) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        async def read():  # type: ignore[no-untyped-def]
            async with get_client() as client:
                return await client.read_artifacts(artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                ))

        return self.api(read)

    def deployment(self, name: str):  # type: ignore[no-untyped-def]
        from prefect.client.orchestration import get_client

        async def read():  # type: ignore[no-untyped-def]
            async with get_client() as client:
                return await client.read_deployment_by_name(name)

        return self.api(read)


def _records(shared_dir: Path) -> list[str]:
    text = (shared_dir / "golden" / "vanilla-tiny" / "shared_real.fa").read_text()
    return [">" + r for r in text.split(">")[1:]]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path, demo_models,  # type: ignore[no-untyped-def]
         prefect_server: PrefectServer) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("deploy")
    url, env = prefect_server.url, prefect_server.env  # the package's server (conftest.py)
    processes: list[subprocess.Popen] = []
    try:
        # a checkout in a temp location, marked so that its code is recognisable in run_info.json
        deployed_from = root / "deploy-checkout"
        shutil.copytree(REPO_ROOT, deployed_from, ignore=_IGNORE)
        init = deployed_from / "virnucpro" / "__init__.py"
        init.write_text(re.sub(r'(__version__ = "[^"]+)"', rf'\1{VERSION_MARKER}"', init.read_text()))
        data = root / "data"
        inbox, outbox = data / "inbox", data / "outbox"
        inbox.mkdir(parents=True)
        records = _records(shared_dir)
        for name, part in (("s1.fa", records[0:3]), ("s2.fasta", records[3:6]), ("s3.fna", records[6:9])):
            (inbox / name).write_text("".join(part))
        site = Site(url=url, env=env, checkout=deployed_from, deployed_from=deployed_from,
                    worker_log=root / "worker.log", inbox=inbox, outbox=outbox, data=data)
        for pool, template in (("virnucpro-gpu", "gpu-process-pool.json"),
                               ("virnucpro-control", "control-process-pool.json")):
            site.prefect("work-pool", "create", pool, "--type", "process",
                         "--base-job-template", str(deployed_from / "deployments" / template))
        deploy_env = {**env, "VIRNUCPRO_INBOX": str(inbox), "VIRNUCPRO_OUTBOX": str(outbox)}
        done = subprocess.run([str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all"],
                              cwd=deployed_from, env=deploy_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

        # the worker's checkout is somewhere else (the deploying checkout is gone) and newer
        checkout = root / "worker-checkout"
        deployed_from.rename(checkout)
        init = checkout / "virnucpro" / "__init__.py"
        init.write_text(init.read_text().replace(VERSION_MARKER, WORKER_MARKER))
        site.checkout = checkout
        worker_cwd = root / "worker-cwd"
        worker_cwd.mkdir()
        with open(site.worker_log, "wb") as log:  # plain Prefect: no VIRNUCPRO_HOME, no script
            worker = subprocess.Popen(
                [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "virnucpro-gpu"],
                env={**env, "PYTHONPATH": str(checkout)}, cwd=worker_cwd, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        processes.append(worker)
        yield site
    finally:
        for process in reversed(processes):
            stop(process)


def _model_params(demo_models) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"device": "cpu", "dnabert_model": demo_models.dnabert, "esm_model": demo_models.esm,
            "classifier": demo_models.classifier(500)}


@pytest.mark.slow
def test_deployments_come_from_prefect_yaml(site: Site) -> None:
    predict = site.deployment("virnucpro-predict/predict")
    batch = site.deployment("virnucpro-batch/batch")
    nightly = site.deployment("virnucpro-nightly/nightly")
    pull = [{"virnucpro.orchestration.checkout.enter_checkout": {}}]
    for deployment in (predict, batch, nightly):
        assert deployment.pull_steps == pull
        assert str(site.deployed_from) not in deployment.model_dump_json()  # no deploy-time path
        assert deployment.version == "0.1.0" + VERSION_MARKER  # the code it was deployed from
    assert predict.work_pool_name == batch.work_pool_name == "virnucpro-gpu"
    assert nightly.work_pool_name == "virnucpro-control"  # the night never takes a GPU slot
    assert predict.parameters["persistent_models"] is True
    assert "persistent_models" in predict.parameter_openapi_schema["properties"]
    assert "samples" in batch.parameter_openapi_schema["properties"]
    assert nightly.parameters["inbox"] == str(site.inbox) and nightly.parameters["outbox"] == str(site.outbox)
    assert nightly.parameters["dispatch_deployments"] is True
    schedule = nightly.schedules[0].schedule
    assert schedule.cron == "0 2 * * *" and schedule.timezone


@pytest.mark.slow
def test_plain_worker_runs_predict_and_says_its_code_is_not_the_deployed_one(
    site: Site, demo_models  # type: ignore[no-untyped-def]
) -> None:
    out = site.data / "predict-out"
    flow_run_id = site.run_deployment(
        "virnucpro-predict/predict", input_fasta=site.inbox / "s1.fa", output_dir=out,
        persistent_models="true", **_model_params(demo_models),
    )
    run = site.wait(flow_run_id)
    assert run.name == "predict-s1.fa"
    info = json.loads((out / "run_info.json").read_text())
    assert info["virnucpro_version"].endswith(WORKER_MARKER)  # the worker's installed checkout ran
    assert info["persistent_models"] is True
    assert [s["model_loads"] for s in info["stages"]] == [{"cpu": {"dnabert": 1, "esm": 1}}] * 2
    memory = site.artifacts(flow_run_id, "gpu-memory-checkpoints-s1")
    assert len(memory) == 1 and memory[0].type == "table"
    rows = json.loads(memory[0].data)
    assert [r["checkpoint"] for r in rows][:1] == ["start"]
    assert {r["checkpoint"] for r in rows} >= {"after-dnabert", "after-esm", "end"}
    summary = site.artifacts(flow_run_id, "prediction-summary-s1")
    assert len(summary) == 1 and summary[0].type == "markdown"
    assert info["models"]["esm"]["sha256"] in summary[0].data and "DEMO MODELS" in summary[0].data
    mismatch = (f"the deployment was made from virnucpro 0.1.0{VERSION_MARKER}, but this worker runs "
                f"virnucpro 0.1.0{WORKER_MARKER}")
    assert mismatch in summary[0].data
    logs = site.logs(flow_run_id)
    assert any(mismatch in line.message for line in logs)
    assert any(line.name.startswith("virnucpro.") and line.level == 20 for line in logs)  # library INFO


@pytest.mark.slow
def test_a_run_without_the_flows_fails_at_once_naming_what_to_set(site: Site) -> None:
    flow_run_id = site.run_deployment(
        "virnucpro-predict/predict", input_fasta=site.inbox / "s1.fa",
        job_variables={"env": {"VIRNUCPRO_HOME": str(site.data)}},  # a folder without the flows
    )
    run = site.wait(flow_run_id, expect_completed=False)
    assert run.state.is_failed(), run.state
    assert f"VIRNUCPRO_HOME={site.data} is not a VirNucPro checkout" in run.state.message
    assert any("is not a VirNucPro checkout" in line.message for line in site.logs(flow_run_id))


# -- the work-pool templates ----------------------------------------------------------------
@pytest.mark.slow
def test_gpu_process_pool_template_wires_cuda_visible_devices(site: Site) -> None:
    from prefect.workers.process import ProcessJobConfiguration

    template = json.loads((REPO_ROOT / "deployments" / "gpu-process-pool.json").read_text())

    def configure(values: dict):  # type: ignore[no-untyped-def]
        return lambda: ProcessJobConfiguration.from_template_and_values(template, values)

    pinned = site.api(configure({"cuda_visible_devices": "1"}))
    assert pinned.env["CUDA_VISIBLE_DEVICES"] == "1" and pinned.env["DO_NOT_TRACK"] == "1"
    inherit = site.api(configure({}))
    assert inherit.env.get("CUDA_VISIBLE_DEVICES") is None  # dropped: the worker's own pinning applies
    merged = site.api(configure({"cuda_visible_devices": "0", "env": {"EXTRA": "x"}}))
    assert merged.env["CUDA_VISIBLE_DEVICES"] == "0" and merged.env["EXTRA"] == "x"


def test_kubernetes_pool_template_requests_gpus() -> None:
    template = json.loads((REPO_ROOT / "deployments" / "kubernetes-gpu-pool.json").read_text())
    manifest = template["job_configuration"]["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] == 1
    placeholders = set(re.findall(r"{{\s*([a-z_]+)\s*}}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"])  # every placeholder is a variable
