"""One real Prefect server for every test of this package: ``prefect server start`` on 127.0.0.1.

Started once (its fresh database migration costs ~13 s of CPU), used by the in-process flow runs
of test_flow/test_nightly (``harness``) and by the deployment site of test_deployment (work pool,
``prefect deploy``, a process worker), and stopped by process group after the package's last test.
Each test reads only its own flow runs and artifacts (by flow-run ID), so sharing is safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.orchestration.server import PREFECT, PrefectServer, free_port, stop

@pytest.fixture(scope="package")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTHONPATH"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_URL=url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_LOGGING_EXTRA_LOGGERS="virnucpro",
    )
    log = root / "server.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={k: v for k, v in env.items() if k != "PREFECT_API_URL"}, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "server did not become healthy:\n" + log.read_text()[-4000:]
            time.sleep(1)
        yield PrefectServer(url=url, env=env, root=root, log=log)
    finally:
        stop(server)


@pytest.fixture(scope="package")
def harness(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """This process's Prefect client pointed at the package's server (what
    ``prefect_test_harness`` does with a server of its own): flows called here run against it."""
    import contextlib
    import inspect

    from prefect import context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:  # logs and events still queued go out while the server is up
        with contextlib.suppress(RuntimeError):  # the log worker may never have started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        # also for contexts copied earlier, as the harness does (a private helper: optional)
        as_global = getattr(context, "_temporary_global_settings_context", None)
        with as_global(context.get_settings_context()) if as_global else contextlib.nullcontext():
            yield prefect_server
            run_coro_as_sync(drain())
