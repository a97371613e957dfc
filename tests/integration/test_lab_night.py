"""A lab's night for real: two GPU workers, a control worker, a worker lost mid-night.

``prefect server start`` on 127.0.0.1, the work pools from ``deployments/``, ``prefect deploy
--all`` from ``prefect.yaml``, and three process workers started with ``deployments/start-worker.sh``: two GPU slots (``cpu`` mode
here: no GPU on CI; each its own work queue with limit 1) and the control worker. Then ONE night of
4 samples of different sizes on the tiny demo models:

- the nightly run runs on the control pool, never on a GPU slot;
- the samples are spread largest first, one batch run per slot, so both slots run samples;
- mid-night the first slot's worker is SIGKILLed (process group): its batch run survives it (own
  session, no output streamed to the dead worker) and finishes the sample it was on; then the
  batch run's own process group is SIGKILLed (the host is gone): the night sees its heartbeats
  stop, marks it Crashed and re-dispatches its unfinished sample to the other slot;
- the night completes; every output equals a single-worker night's (one pool, one process),
  byte for byte; each batch run's pool loaded each model once; no slot ran two runs at once.

One server and one set of workers serve every assertion (a module fixture); everything started is
stopped by process group, by PID, in teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SLOTS = ("gpu-lab-a", "gpu-lab-b")
SAMPLES = {"s6.fa": (0, 6), "s5.fa": (6, 11), "s3.fa": (11, 14), "s2.fa": (14, 16)}  # records
LOST_AFTER_S = 45  # 1.5 heartbeats of the pool template (30 s, Prefect's minimum): a live run's
# heartbeats are never 45 s apart, and a lost host is found 15-45 s after it died
NIGHT_TIMEOUT_S = 540
NOT_COMPARED = {"run_info.json", "report.html", ".virnucpro.lock"}  # timings, paths, pids
MANIFEST = ".virnucpro_outputs.json"  # SHA-256 of every output, those above included
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "build", "dist",
    "example_output", "runs", "out", ".ruff_cache", ".mypy_cache",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with everything in its process group."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Lab:
    url: str
    env: dict[str, str]
    checkout: Path
    root: Path
    inbox: Path
    outbox: Path
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def prefect(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([str(Path(sys.executable).parent / "prefect"), *args], cwd=self.checkout,
                              env=env or self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    def api(self, fn):  # type: ignore[no-untyped-def]
        """``fn(client)`` with a client of this lab's server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def call():  # type: ignore[no-untyped-def]
            async with get_client() as client:
                return await fn(client)

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            return asyncio.run(call())

    def start_worker(self, key: str, *args: str) -> None:
        self.logs[key] = self.root / f"worker-{key}.log"
        with open(self.logs[key], "wb") as log:
            self.workers[key] = subprocess.Popen(
                ["bash", str(self.checkout / "deployments" / "start-worker.sh"), *args],
                env={**self.env, "VIRNUCPRO_HOME": str(self.checkout)}, cwd=self.root, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def tail(self) -> str:
        return "\n".join(f"--- {k}\n{p.read_text(errors='replace')[-2500:]}" for k, p in self.logs.items())


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, "server did not become healthy:\n" + log.read_text()[-4000:]
        time.sleep(1)


def _wait_for(what: str, check, timeout: float, lab: Lab, every: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{lab.tail()}"
        time.sleep(every)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, golden_tiny_dir: Path, demo_models) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("lab")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONPATH"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
        DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    # a lean server: the night needs the API, the event persister (heartbeats) and the task-run
    # recorder; not cron schedules, late-run marking, automations or clean-up loops
    idle = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
        "SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "FOREMAN", "REPOSSESSOR",
        "CLEANUP_RECONCILER", "DB_VACUUM", "TRIGGERS")}
    processes: list[subprocess.Popen] = []
    try:
        server_log = root / "server.log"
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", url.rsplit(":", 1)[1].split("/")[0]],
                env={**{k: v for k, v in env.items() if k != "PREFECT_API_URL"}, **idle}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
            )
        processes.append(server)
        _wait_healthy(url, server, server_log)
        checkout = root / "checkout"
        shutil.copytree(REPO_ROOT, checkout, ignore=_IGNORE)
        inbox, outbox = root / "inbox", root / "outbox"
        inbox.mkdir()
        records = [">" + r for r in (golden_tiny_dir / "shared_real.fa").read_text().split(">")[1:]]
        for name, (first, last) in SAMPLES.items():
            (inbox / name).write_text("".join(records[first:last]))
        lab = Lab(url, env, checkout, root, inbox, outbox)
        for pool, template in (("virnucpro-gpu", "gpu-process-pool.json"),
                               ("virnucpro-control", "control-process-pool.json")):
            lab.prefect("work-pool", "create", pool, "--type", "process", "--base-job-template",
                        str(checkout / "deployments" / template))
        lab.prefect("--no-prompt", "deploy", "--all",
                    env={**env, "VIRNUCPRO_INBOX": str(inbox), "VIRNUCPRO_OUTBOX": str(outbox)})
        lab.start_worker("a", "cpu", "--name", "lab-a", "--work-queue", SLOTS[0])
        lab.start_worker("b", "cpu", "--name", "lab-b", "--work-queue", SLOTS[1])
        lab.start_worker("control", "control")
        processes += list(lab.workers.values())
        yield lab
    finally:
        for process in reversed(processes):
            _stop(process)


# -- the night ---------------------------------------------------------------------------------
@dataclass
class Night:
    state: Any
    report: dict
    runs: list  # every flow run of the server
    killed_batch: Any
    worker_killed_at: float
    first_done_at: float


def _flow_runs(lab: Lab) -> list:
    async def read(client):  # type: ignore[no-untyped-def]
        return await client.read_flow_runs(limit=200)

    return lab.api(read)


def _queues_live(lab: Lab) -> bool:
    from virnucpro.orchestration.dispatch import live_slots

    def check() -> bool:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: lab.url}), get_client(sync_client=True) as client:
            return {s.queue for s in live_slots(client, "virnucpro-gpu")} == set(SLOTS)

    return check()


def _kill_group(pid: int) -> None:
    assert os.getpgid(pid) == pid, f"{pid} does not lead its own process group"
    os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def night(lab: Lab, demo_models) -> Night:  # type: ignore[no-untyped-def]
    _wait_for("both GPU slots polled", lambda: _queues_live(lab), 120, lab, every=2)
    out = lab.prefect(
        "deployment", "run", "virnucpro-nightly/nightly", "-p", "device=cpu",
        "-p", f"dnabert_model={demo_models.dnabert}", "-p", f"esm_model={demo_models.esm}",
        "-p", f"classifier={demo_models.classifier(500)}", "-p", f"lost_after_s={LOST_AFTER_S}",
        "-p", f"dispatch_timeout_s={NIGHT_TIMEOUT_S}",
    )
    night_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)

    def batch_on_a():  # type: ignore[no-untyped-def]
        return next((r for r in _flow_runs(lab) if r.work_queue_name == SLOTS[0] and r.state.is_running()
                     and r.infrastructure_pid), None)

    batch = _wait_for("the batch run of slot a to run", batch_on_a, 240, lab)
    _kill_group(lab.workers["a"].pid)  # the worker dies; its flow run is in its own session
    worker_killed_at = time.time()
    largest = next(iter(SAMPLES)).removesuffix(".fa")
    _wait_for("slot a's first sample to finish after its worker died",
              lambda: list(lab.outbox.glob(f"{largest}-*/.virnucpro_work/DONE")), 300, lab, every=0.2)
    first_done_at = time.time()
    _kill_group(int(batch.infrastructure_pid.rsplit(":", 1)[-1]))  # now the host is gone too

    def finished():  # type: ignore[no-untyped-def]
        run = next(r for r in _flow_runs(lab) if str(r.id) == night_id)
        return run if run.state.is_final() else None

    state = _wait_for("the night to end", finished, NIGHT_TIMEOUT_S + 120, lab, every=3).state
    reports = list(lab.outbox.glob(f"nightly-*-{night_id[:8]}.json"))
    assert len(reports) == 1, f"{state}\n{lab.tail()}"
    return Night(state, json.loads(reports[0].read_text()), _flow_runs(lab), batch, worker_killed_at,
                 first_done_at)


@pytest.fixture(scope="module")
def single_worker_night(lab: Lab, demo_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The same samples through one pool in one process (what one worker's night computes)."""
    from tests.integration.pipeline_helpers import cpu_config
    from virnucpro.pipeline.lease import PoolLease
    from virnucpro.pipeline.prediction import run_prediction

    out = tmp_path_factory.mktemp("single")
    with PoolLease.owned() as lease:
        for name in SAMPLES:
            config = cpu_config(lab.inbox / name, out / name, demo_models, persistent_models=True)
            run_prediction(config, lease=lease.lend())
    return out


def _by_name(report: dict) -> dict[str, dict]:
    return {Path(s["file"]).name: s for s in report["samples"]}


@pytest.mark.slow
def test_the_night_completes_on_both_gpu_slots(night: Night) -> None:
    assert night.state.is_completed(), night.state.message
    assert night.report["counts"]["done"] == 4
    assert night.report["mode"].startswith("dispatched to virnucpro-batch/batch over 2 GPU slot(s)")
    runs = {str(r.id): r for r in night.runs}
    slots_used = {runs[b["flow_run_id"]].work_queue_name for b in night.report["batches"]
                  if any(_by_name(night.report)[s]["batch_run"] == b["name"] for s in b["samples"])}
    assert slots_used == set(SLOTS)  # both GPU workers ran samples
    (nightly,) = [r for r in night.runs if r.name.startswith("night-")]
    assert nightly.work_queue_name == "default" and str(nightly.work_pool_name) == "virnucpro-control"


@pytest.mark.slow
def test_samples_are_spread_largest_first(night: Night) -> None:
    first_round = [b for b in night.report["batches"] if b["attempt"] == 1]
    assert sorted(tuple(b["samples"]) for b in first_round) == [("s5.fa", "s3.fa"), ("s6.fa", "s2.fa")]


@pytest.mark.slow
def test_a_lost_worker_s_samples_finish_on_the_other(night: Night) -> None:
    samples = _by_name(night.report)
    killed = next(b for b in night.report["batches"] if b["flow_run_id"] == str(night.killed_batch.id))
    assert killed["state"] == "Crashed" and killed["message"].startswith("lost: no heartbeat")
    # the sample it was on when its worker died still finished there: the run outlived its worker
    assert samples["s6.fa"]["batch_run"] == killed["name"]
    assert night.first_done_at > night.worker_killed_at
    again = next(b for b in night.report["batches"] if b["attempt"] == 2)
    assert again["samples"] == ["s2.fa"] and again["work_queue"] == SLOTS[1]
    assert samples["s2.fa"]["status"] == "done" and samples["s2.fa"]["batch_run"] == again["name"]


@pytest.mark.slow
def test_outputs_equal_a_single_worker_night_byte_for_byte(night: Night, single_worker_night: Path) -> None:
    for name, sample in _by_name(night.report).items():
        reference = single_worker_night / name
        outputs = sorted(p.name for p in reference.iterdir() if p.is_file() and p.name not in NOT_COMPARED)
        assert "prediction_results.txt" in outputs and "prediction_sequences.tsv" in outputs
        for output in outputs:
            got = (Path(sample["output_dir"]) / output).read_bytes()
            if output == MANIFEST:  # it lists run_info.json/report.html too: compare the rest of its entries
                assert _compared_entries(got) == _compared_entries((reference / output).read_bytes()), name
            else:
                assert got == (reference / output).read_bytes(), (name, output)


def _compared_entries(manifest: bytes) -> dict[str, str]:
    files = json.loads(manifest)["files"]
    assert "prediction_results.txt" in files, files
    return {name: sha for name, sha in files.items() if name not in NOT_COMPARED}


@pytest.mark.slow
def test_each_batch_pool_loads_each_model_once(night: Night) -> None:
    for batch in night.report["batches"]:
        if batch["model_loads"]:  # every batch that finished a sample
            assert batch["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}, batch
    for sample in night.report["samples"]:  # the pool's totals, as each sample saw them
        info = json.loads((Path(sample["output_dir"]) / "run_info.json").read_text())
        assert all(s["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}} for s in info["stages"])


@pytest.mark.slow
def test_no_slot_runs_two_runs_at_once(lab: Lab, night: Night) -> None:
    async def queues(client):  # type: ignore[no-untyped-def]
        return await client.read_work_queues(work_pool_name="virnucpro-gpu")

    limits = {q.name: q.concurrency_limit for q in lab.api(queues)}
    assert all(limits[slot] == 1 for slot in SLOTS)
    for slot in SLOTS:
        spans = sorted((r.start_time, r.end_time or r.state.timestamp) for r in night.runs
                       if r.work_queue_name == slot and r.start_time is not None)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), (slot, spans)
