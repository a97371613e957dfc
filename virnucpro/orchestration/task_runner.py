"""GpuTaskRunner: Prefect's thread-pool task runner that holds the flow run's pool lease.

Prefect enters a flow's task runner (a :meth:`duplicate` of the one on the flow) *before* the
flow-run context exists, so the runner cannot know the run's parameters in ``__enter__``. It reads
them at the first :meth:`submit` (``FlowRunContext.get().parameters``, already validated by
Prefect) and makes the flow run's :class:`~virnucpro.pipeline.lease.PoolLease`: owned when the
``persistent_models`` parameter is true (ONE pool, both models loaded once, for both feature
tasks), per stage otherwise. ``__exit__`` closes the lease, also when the flow failed.

A caller that keeps a pool across several flow runs (the nightly batch) passes its lease as
``lender``; the runner then holds a lent view of it and never closes the pool.

Only settings survive pickling (``flow.serve()``, deployments, subprocess dispatch): the runner is
rebuilt from its settings by :meth:`__reduce__`, so no live pool, lock or thread pool is pickled
and no private field of Prefect's runner is touched.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from virnucpro.pipeline.lease import PoolLease

if TYPE_CHECKING:
    from prefect.futures import PrefectConcurrentFuture
    from prefect.tasks import Task

__all__ = ["GpuTaskRunner", "current_gpu_runner", "PERSISTENT_PARAMETER"]

PERSISTENT_PARAMETER = "persistent_models"


class GpuTaskRunner(ThreadPoolTaskRunner):
    """Runs tasks in threads and holds the flow run's pool lease.

    Args:
        max_workers: threads for concurrent tasks (Prefect's default when None).
        persistent_models: force persistent (True) or per-stage (False) workers; None (default)
            reads the flow run's ``persistent_models`` parameter at the first submit.
        lender: an owned lease (a night's) whose pool this flow run uses and never closes.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        persistent_models: bool | None = None,
        lender: PoolLease | None = None,
    ) -> None:
        super().__init__(max_workers=max_workers)
        self._persistent_setting = persistent_models
        self._lender = lender
        self._lease: PoolLease | None = None
        self._lease_lock = threading.Lock()

    # -- the plugin contract ------------------------------------------------------------------
    def duplicate(self) -> "GpuTaskRunner":
        """A fresh runner with the same settings (and the same lender, if any)."""
        return type(self)(self._max_workers, persistent_models=self._persistent_setting,
                          lender=self._lender)

    def submit(  # type: ignore[override]
        self,
        task: "Task[Any, Any]",
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> "PrefectConcurrentFuture[Any]":
        """Submit ``task``; the first call makes the lease from the flow run's parameters."""
        self.lease  # noqa: B018 (made here, in the flow-run context, not in a task thread)
        return super().submit(task, parameters, wait_for, dependencies)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # Close the lease first: a task still waiting on its pool (flow failed or timed out) then
        # fails at once instead of keeping the thread pool's shutdown waiting.
        try:
            with self._lease_lock:
                lease, self._lease = self._lease, None
            if lease is not None:
                lease.close()
        finally:
            super().__exit__(exc_type, exc_value, traceback)

    def __eq__(self, value: object) -> bool:
        if not isinstance(value, GpuTaskRunner):
            return False
        return (
            self._max_workers == value._max_workers
            and self._persistent_setting == value._persistent_setting
            and self._lender is value._lender
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by settings

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_workers={self._max_workers!r}, "
            f"persistent_models={self._persistent_setting!r}, lent={self._lender is not None})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the settings only (a lender's live pool cannot cross processes)."""
        return (_rebuild, (type(self), self._max_workers, self._persistent_setting))

    # -- the lease ------------------------------------------------------------------------------
    @property
    def lease(self) -> PoolLease:
        """The flow run's lease: lent (a lender was given), owned (persistent) or per stage."""
        with self._lease_lock:
            if self._lease is None:
                if self._lender is not None:
                    self._lease = self._lender.lend()
                else:
                    self._lease = PoolLease.for_run(self._persistent_from_run())
            return self._lease

    def _persistent_from_run(self) -> bool:
        if self._persistent_setting is not None:
            return self._persistent_setting
        context = FlowRunContext.get()
        parameters = (context.parameters if context is not None else None) or {}
        return bool(parameters.get(PERSISTENT_PARAMETER, False))


def _rebuild(cls: type[GpuTaskRunner], max_workers: int | None,
             persistent_models: bool | None) -> GpuTaskRunner:
    return cls(max_workers, persistent_models=persistent_models)


def current_gpu_runner() -> GpuTaskRunner | None:
    """The running flow's :class:`GpuTaskRunner` (from a task or the flow body), if it has one."""
    context = FlowRunContext.get()
    if context is None:
        return None
    runner = getattr(context, "task_runner", None)
    return runner if isinstance(runner, GpuTaskRunner) else None
