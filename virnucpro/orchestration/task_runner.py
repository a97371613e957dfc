"""GpuTaskRunner: Prefect's thread-pool task runner that owns a persistent GPU worker pool.

Prefect enters a flow's task runner (a :meth:`duplicate` of the one on the flow) *before* the
flow-run context exists, so the runner cannot know the run's parameters in ``__enter__``. It reads
them at the first :meth:`submit` (``FlowRunContext.get().parameters``) and, when the flow run's
``persistent_models`` parameter is true, opens ONE :class:`PersistentWorkerPool` the first time a
feature task asks for it (:meth:`pool_for`). Both feature tasks of the run then use that pool, so
each worker loads DNABERT-S and ESM-2 once. ``__exit__`` closes the pool, also when the flow failed.

A caller that keeps a pool across several flow runs (the nightly batch) lends it with
``GpuTaskRunner(pool=...)``; a lent pool is used but never closed by the runner.

Only settings survive pickling (``flow.serve()``, deployments, subprocess dispatch): no live pool,
lock, thread pool or process handle is in the pickled state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from virnucpro.pipeline.persistent_pool import PersistentWorkerPool

if TYPE_CHECKING:
    from prefect.futures import PrefectConcurrentFuture
    from prefect.tasks import Task

    from virnucpro.pipeline.prediction import RunPlan

__all__ = ["GpuTaskRunner", "current_gpu_runner", "PERSISTENT_PARAMETER"]

PERSISTENT_PARAMETER = "persistent_models"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(value: Any, name: str) -> bool:
    """A flow parameter as a bool (deployments may hand over ``"true"``/``"false"`` strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"flow parameter {name}={value!r} is not a boolean; pass true or false")


class GpuTaskRunner(ThreadPoolTaskRunner):
    """Runs tasks in threads and owns the flow run's persistent GPU worker pool.

    Args:
        max_workers: threads for concurrent tasks (Prefect's default when None).
        persistent_models: force persistent (True) or per-stage (False) workers; None (default)
            reads the flow run's ``parameter`` at the first submit.
        pool: a started pool to use for this flow run, kept open afterwards (the caller owns it).
        parameter: the name of the flow parameter that switches persistent models on.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        persistent_models: bool | None = None,
        pool: PersistentWorkerPool | None = None,
        parameter: str = PERSISTENT_PARAMETER,
    ) -> None:
        super().__init__(max_workers=max_workers)
        self._persistent_setting = persistent_models
        self._parameter = parameter
        self._lent_pool = pool
        self._owned_pool: PersistentWorkerPool | None = None
        self._persistent: bool | None = persistent_models
        self._pool_lock = threading.Lock()
        self.pools_opened = 0

    # -- the plugin contract ------------------------------------------------------------------
    def duplicate(self) -> "GpuTaskRunner":
        """A fresh runner with the same settings (and the same lent pool, if any)."""
        return type(self)(
            max_workers=self._max_workers,
            persistent_models=self._persistent_setting,
            pool=self._lent_pool,
            parameter=self._parameter,
        )

    def submit(  # type: ignore[override]
        self,
        task: "Task[Any, Any]",
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> "PrefectConcurrentFuture[Any]":
        """Submit ``task``; the first call reads the flow run's ``persistent_models`` parameter."""
        self._read_flow_parameters()
        return super().submit(task, parameters, wait_for, dependencies)

    def __enter__(self) -> "GpuTaskRunner":
        super().__enter__()
        self._persistent = self._persistent_setting
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # Close the pool first: a task still waiting on it (flow failed or timed out) then fails
        # at once instead of keeping the thread pool's shutdown waiting.
        try:
            self._close_owned_pool()
        finally:
            super().__exit__(exc_type, exc_value, traceback)

    def __eq__(self, value: object) -> bool:
        if not isinstance(value, GpuTaskRunner):
            return False
        return (
            self._max_workers == value._max_workers
            and self._persistent_setting == value._persistent_setting
            and self._parameter == value._parameter
            and self._lent_pool is value._lent_pool
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by settings

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_workers={self._max_workers!r}, "
            f"persistent_models={self._persistent_setting!r}, parameter={self._parameter!r}, "
            f"lent_pool={self._lent_pool is not None})"
        )

    # -- pickling: settings only ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_owned_pool", "_lent_pool", "_pool_lock", "_executor"):
            state.pop(key, None)
        state["_cancel_events"] = {}
        state["_worker_thread_ids"] = set()
        state["_active_submission_count"] = 0
        state["_started"] = False
        state["_persistent"] = self._persistent_setting
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._executor = None
        self._owned_pool = None
        self._lent_pool = None
        self._pool_lock = threading.Lock()

    # -- the pool -------------------------------------------------------------------------------
    @property
    def persistent_models(self) -> bool | None:
        """Whether this flow run keeps models resident; None until the parameters were read."""
        if self._lent_pool is not None:
            return True
        return self._persistent

    @property
    def pool(self) -> PersistentWorkerPool | None:
        """The pool this flow run uses now (lent or owned), if one is open."""
        return self._lent_pool if self._lent_pool is not None else self._owned_pool

    @property
    def owns_pool(self) -> bool:
        return self._owned_pool is not None

    def pool_for(self, plan: "RunPlan") -> PersistentWorkerPool | None:
        """The flow run's persistent pool, opened on first use; None in per-stage mode.

        Called by the feature tasks. Thread-safe: concurrent callers get the same pool.
        """
        from virnucpro.pipeline.prediction import open_pool

        self._read_flow_parameters()
        with self._pool_lock:
            if self._lent_pool is not None:
                if not self._lent_pool.is_running:
                    try:
                        self._lent_pool.start()  # lent before it was started
                    except RuntimeError:  # lent, then closed (broken): fall through
                        pass
                if self._lent_pool.is_running:
                    return self._lent_pool
            if not self._persistent and self._lent_pool is None:
                return None
            if self._owned_pool is not None and self._owned_pool.is_running:
                return self._owned_pool
            if self._lent_pool is not None:
                self.logger.warning("the lent worker pool is closed; opening one for this flow run")
            self._owned_pool = open_pool(plan)
            self.pools_opened += 1
            return self._owned_pool

    def discard_pool(self, pool: PersistentWorkerPool | None) -> None:
        """Close ``pool`` after a failed attempt, so that a retry starts fresh workers.

        A lent pool is closed too (it is broken); its owner sees ``is_running`` False and replaces it.
        """
        if pool is None:
            return
        with self._pool_lock:
            if pool is self._owned_pool:
                self._owned_pool = None
        pool.close()

    def _close_owned_pool(self) -> None:
        with self._pool_lock:
            pool, self._owned_pool = self._owned_pool, None
        if pool is not None:
            pool.close()

    def _read_flow_parameters(self) -> None:
        if self._persistent is not None:
            return
        context = FlowRunContext.get()
        if context is None:
            return
        parameters = context.parameters or {}
        value = parameters.get(self._parameter, False)
        self._persistent = _as_bool(value, self._parameter)


def current_gpu_runner() -> GpuTaskRunner | None:
    """The running flow's :class:`GpuTaskRunner` (from a task or the flow body), if it has one."""
    context = FlowRunContext.get()
    if context is None:
        return None
    runner = getattr(context, "task_runner", None)
    return runner if isinstance(runner, GpuTaskRunner) else None
