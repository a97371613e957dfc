"""What every VirNucPro flow run does first: library logs into the run, and the code-version check.

- The library logs with ``logging.getLogger("virnucpro.…")``. ``PREFECT_LOGGING_EXTRA_LOGGERS=
  virnucpro`` (set by the pool templates and the flows) attaches Prefect's API handler to the
  ``virnucpro`` logger, but the logger's level stays the root's (WARNING), so no INFO line (rates,
  model loads, workers) would reach the UI. :func:`route_library_logs` sets it to INFO unless the
  site configured a level itself.
- Prefect warns in every task run that a timeout of a task running in a worker thread cannot
  interrupt blocking calls. Our steps are Python loops (the feature steps wait on their shards in
  one-second slices), which the timeout does interrupt, so :func:`route_library_logs` drops that
  one warning instead of printing it a dozen times per sample.
- :func:`check_code_version` compares the deployment's recorded ``version`` (the code
  ``prefect deploy`` ran from) with the code this process runs; a mismatch is logged as a warning
  and returned, so the run's summary artifact says so too.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.context import FlowRunContext

from virnucpro.orchestration.checkout import code_version, version_mismatch

__all__ = ["LIBRARY_LOGGER", "route_library_logs", "check_code_version", "start_run"]

LIBRARY_LOGGER = "virnucpro"


class _ThreadTimeoutWarning(logging.Filter):
    """Drops Prefect's "timeout ... running in a worker thread" warning (see the module doc)."""

    PREFIX = "Timeout of %s seconds configured for this task, but the task is running in a worker thread"

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIX))


def route_library_logs(level: int = logging.INFO) -> None:
    """Let the library's INFO records through to the run's logs (a level set by the site wins)."""
    library = logging.getLogger(LIBRARY_LOGGER)
    if library.level == logging.NOTSET:
        library.setLevel(level)
    task_runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _ThreadTimeoutWarning) for f in task_runs.filters):
        task_runs.addFilter(_ThreadTimeoutWarning())


def check_code_version() -> str | None:
    """The mismatch warning when this run's code is not its deployment's, else None (also when
    the run has no deployment: a local run is its own code)."""
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None or flow_run.deployment_id is None:
        return None
    warning = version_mismatch(flow_run.deployment_version, code_version())
    if warning:
        get_run_logger().warning(warning)
    return warning


def start_run() -> tuple[str, ...]:
    """Both of the above, once at the start of a flow run; returns the notes for its artifacts."""
    route_library_logs()
    warning = check_code_version()
    return (warning,) if warning else ()
