"""A dispatched night: one batch run per live GPU slot, watched to the end, lost work re-dispatched.

The night's control run (on the CPU pool ``virnucpro-control``, so it never holds a GPU slot)
hands its samples to the ``virnucpro-batch/batch`` deployment on the GPU pool:

1. **Slots.** Each GPU worker polls its own work queue ``gpu-<host>-<gpus>`` (concurrency limit 1,
   see ``deployments/start-worker.sh``). A slot is live when its queue was polled within
   ``slot_stale_s`` (Prefect's own readiness rule: 60 s). Plain workers on the ``default`` queue
   count as one slot each (their number is the pool's ONLINE workers).
2. **Partition.** Samples are spread over the live slots largest first, each to the least-loaded
   slot (:func:`~virnucpro.orchestration.partition.partition`), so slots finish together. Each
   slot gets ONE batch run (``run_deployment(..., work_queue_name=<slot>, timeout=0)``) that runs
   its share on one persistent pool: every model is loaded once per slot, not once per sample.
3. **Watch.** Every ``poll_s`` the night reads each batch run's state. A batch run ``Running``
   whose heartbeats stopped for ``lost_after_s`` (default: 4 heartbeat intervals of the GPU pool,
   whose template sets ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30``) is lost (its host or process
   died): the night marks it, and its unfinished sample runs, ``Crashed``. A run that never sent a
   heartbeat (heartbeats switched off) is never judged lost; the deadline covers it. A run still
   ``Scheduled``/``Pending`` on a slot that is no longer live (its worker died before starting
   it) is cancelled.
4. **Re-dispatch.** When a batch run ends, each of its samples is ``done`` (its DONE marker holds
   its hash), ``failed`` (its own predict run failed: bad input, not re-run) or lost. Lost samples
   go again, to live slots (least loaded first) — not to the slot whose batch run was just lost
   until its queue is polled past ``slot_stale_s`` after the loss (a dead worker's queue still
   looks polled for that long) — at most ``redispatch_attempts`` more times; past
   that, or with no live slot until the deadline, they are ``missing`` and the night fails naming
   them.
5. **Deadline.** ``timeout_s`` (default :func:`night_timeout`, from the night's size) ends the
   watch: batch runs still going are cancelled (so they do not run later, uncollected) and their
   unfinished samples are ``missing``.

Everything goes through Prefect's API (deployments, work queues, states, heartbeat events); there
is no scheduler or RPC of our own.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.states import Cancelled, Cancelling, Crashed

from virnucpro.domain.outputs import OutputPaths
from virnucpro.orchestration.batch import (
    BatchRecord,
    Sample,
    SampleOutcome,
    is_finished,
    outcome_from_outputs,
)
from virnucpro.orchestration.partition import input_size, partition
from virnucpro.orchestration.samples import json_parameters

__all__ = [
    "BATCH_DEPLOYMENT",
    "GPU_POOL",
    "DEFAULT_QUEUE",
    "DispatchSettings",
    "Slot",
    "DispatchResult",
    "live_slots",
    "pool_heartbeat_s",
    "night_timeout",
    "dispatch_night",
]

BATCH_DEPLOYMENT = "virnucpro-batch/batch"
GPU_POOL = "virnucpro-gpu"
DEFAULT_QUEUE = "default"

NIGHT_BASE_S = 1800.0
"""Fixed part of a night's deadline: worker start, model loading, the first samples' set-up."""
GPU_BYTES_PER_S = 1000.0
"""Sequence bytes per second one GPU slot is budgeted (fp32 ESM-2 3B on an H200 does ~3,000 bp/s
on stop-free-rich input: a 3x margin)."""
CPU_BYTES_PER_S = 20.0
"""The same for a CPU slot (the 3B model on CPU is two orders of magnitude slower)."""
HEARTBEAT_SETTING = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
PREFECT_HEARTBEAT_S = 180.0
"""Prefect's own default heartbeat interval, when the pool's template does not set one."""
LOST_AFTER_BEATS = 4


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How a night dispatches (the nightly flow's parameters of the same names)."""

    deployment: str = BATCH_DEPLOYMENT
    gpu_pool: str = GPU_POOL
    redispatch_attempts: int = 2
    timeout_s: float | None = None  # None: night_timeout()
    lost_after_s: float | None = None  # None: LOST_AFTER_BEATS heartbeat intervals of the pool
    poll_s: float = 5.0
    slot_stale_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Slot:
    """One GPU worker's share of the night: its work queue (``index`` tells apart several plain
    workers sharing the ``default`` queue)."""

    queue: str
    index: int = 0

    @property
    def label(self) -> str:
        return self.queue if self.index == 0 else f"{self.queue}-{self.index}"


@dataclass(frozen=True, slots=True)
class DispatchResult:
    outcomes: tuple[SampleOutcome, ...]
    batches: tuple[BatchRecord, ...]
    slots: tuple[str, ...]  # the slots live when the night started


@dataclass(slots=True)
class _Batch:
    """A batch run the night is watching (mutable: its state changes)."""

    slot: Slot
    samples: list[Sample]
    attempt: int
    run_id: UUID
    name: str = ""
    state: str = "Scheduled"
    message: str | None = None
    ended: bool = False
    children: dict[str, FlowRun] = field(default_factory=dict)  # input path -> predict run


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _polled_within(queue_last_polled: dt.datetime | None, seconds: float) -> bool:
    if queue_last_polled is None:
        return False
    return (_now() - queue_last_polled).total_seconds() <= seconds


def live_slots(client: SyncPrefectClient, pool: str, stale_s: float = 60.0) -> list[Slot]:
    """The GPU slots of ``pool`` with a live worker: its work queues (other than ``default``)
    polled within ``stale_s``; if none, one slot per ONLINE worker on a live ``default`` queue."""
    queues = [q for q in client.read_work_queues(work_pool_name=pool)
              if not q.is_paused and _polled_within(q.last_polled, stale_s)]
    named = sorted(q.name for q in queues if q.name != DEFAULT_QUEUE)
    if named:
        return [Slot(name) for name in named]
    if any(q.name == DEFAULT_QUEUE for q in queues):
        online = [w for w in client.read_workers_for_work_pool(pool) if w.status == WorkerStatus.ONLINE]
        return [Slot(DEFAULT_QUEUE, i) for i in range(max(1, len(online)))]
    return []


def pool_heartbeat_s(client: SyncPrefectClient, pool: str) -> float:
    """The heartbeat interval flow runs of ``pool`` use: its template's ``env`` default for
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, else Prefect's default."""
    try:
        template = client.read_work_pool(pool).base_job_template
        env = template["variables"]["properties"]["env"].get("default") or {}
        return float(env.get(HEARTBEAT_SETTING) or PREFECT_HEARTBEAT_S)
    except (KeyError, TypeError, ValueError, AttributeError):
        return PREFECT_HEARTBEAT_S


def night_timeout(total_bytes: int, n_slots: int, on_cpu: bool, redispatch_attempts: int) -> float:
    """Seconds a night may take: :data:`NIGHT_BASE_S` plus its sequence bytes at the budgeted rate
    over its slots, with room for one re-dispatch round per allowed attempt (at most 3)."""
    rate = (CPU_BYTES_PER_S if on_cpu else GPU_BYTES_PER_S) * max(1, n_slots)
    rounds = 1 + min(max(0, redispatch_attempts), 3) / 2
    return NIGHT_BASE_S + rounds * total_bytes / rate


def _loads_of(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Model loads per pool worker of a batch run, from its samples' run_info.json (the pool's
    running totals as each sample saw them: the maximum is the batch's)."""
    loads: dict[str, dict[str, int]] = {}
    for sample in samples:
        try:
            info = json.loads(OutputPaths.for_dir(sample.output_dir).run_info.read_text())
        except (OSError, ValueError):
            continue
        for stage in info.get("stages") or []:
            for worker, counts in (stage.get("model_loads") or {}).items():
                seen = loads.setdefault(worker, {})
                for model, n in counts.items():
                    seen[model] = max(seen.get(model, 0), int(n))
    return loads


class _Night:
    """The watch loop of one dispatched night (see the module's docstring)."""

    def __init__(self, client: SyncPrefectClient, night_id: str, params: Mapping[str, Any],
                 settings: DispatchSettings, run_logger: Any) -> None:
        self.client = client
        self.night_id = night_id
        self.params = json_parameters(params)
        self.settings = settings
        self.log = run_logger
        self.batches: list[_Batch] = []
        self.dispatches: dict[str, int] = {}  # sample path -> times dispatched
        self.outcomes: dict[str, SampleOutcome] = {}
        self.waiting: list[Sample] = []  # lost samples with no live slot yet
        self.history: dict[str, list[str]] = {}  # sample path -> what happened to its runs
        self.counter = 0
        self.lost_on: dict[str, float] = {}  # queue -> when a batch run on it was lost (monotonic)
        self.lost_after_s = settings.lost_after_s if settings.lost_after_s is not None else (
            LOST_AFTER_BEATS * pool_heartbeat_s(client, settings.gpu_pool))

    # -- dispatch -------------------------------------------------------------------------
    def dispatch(self, slot: Slot, samples: list[Sample]) -> None:
        self.counter += 1
        for sample in samples:
            self.dispatches[str(sample.path)] = self.dispatches.get(str(sample.path), 0) + 1
        attempt = max(self.dispatches[str(s.path)] for s in samples)
        run = run_deployment(
            name=self.settings.deployment,
            parameters={"samples": [{"input_fasta": str(s.path), "output_dir": str(s.output_dir),
                                     "sha256": s.sha256} for s in samples], **self.params},
            timeout=0,
            work_queue_name=None if slot.queue == DEFAULT_QUEUE else slot.queue,
            idempotency_key=f"{self.night_id}:batch-{self.counter}",  # a re-run night reuses it
        )
        self.batches.append(_Batch(slot, list(samples), attempt, run.id, name=run.name))
        self.log.info("dispatched %s to slot %s as batch run %s (attempt %d)",
                      ", ".join(s.name for s in samples), slot.label, run.id, attempt)

    def spread(self, samples: list[Sample], slots: list[Slot]) -> None:
        """``samples`` over ``slots``, largest first, counting the work each slot has queued."""
        queued = [sum(input_size(s.path) for b in self.active if b.slot == slot for s in b.samples
                      if not is_finished(s)) for slot in slots]
        for slot, share in zip(slots, partition(samples, lambda s: input_size(s.path), len(slots), queued)):
            if share:
                self.dispatch(slot, share)

    @property
    def active(self) -> list[_Batch]:
        return [b for b in self.batches if not b.ended]

    # -- watch ----------------------------------------------------------------------------
    def _alive(self, run: FlowRun) -> bool:
        """Not lost: it changed state or sent a heartbeat within ``lost_after_s``, or it never
        sent one (heartbeats off: it cannot be judged)."""
        since = _now() - dt.timedelta(seconds=self.lost_after_s)
        if run.state is not None and run.state.timestamp is not None and run.state.timestamp > since:
            return True  # it started (or changed state) recently
        started = run.start_time or (run.state.timestamp if run.state is not None else None) or since
        page = self.client.read_events(filter=EventFilter(
            occurred=EventOccurredFilter(since=started - dt.timedelta(minutes=1),
                                         until=_now() + dt.timedelta(minutes=5)),
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
        ), limit=1)  # newest first
        return not page.events or page.events[0].occurred > since

    def _children(self, batch: _Batch) -> dict[str, FlowRun]:
        runs = self.client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[batch.run_id])))
        return {str(r.parameters.get("input_fasta")): r for r in runs}

    def _crash(self, batch: _Batch, message: str) -> None:
        self.client.set_flow_run_state(batch.run_id, Crashed(message=message), force=True)
        for child in self._children(batch).values():
            if child.state is not None and not child.state.is_final():
                self.client.set_flow_run_state(
                    child.id, Crashed(message=f"lost with its batch run {batch.name}: {message}"), force=True)

    def poll(self, live: list[Slot]) -> list[Sample]:
        """Read every active batch run once; returns the samples lost this round."""
        live_queues = {s.queue for s in live}
        lost: list[Sample] = []
        for batch in self.active:
            run = self.client.read_flow_run(batch.run_id)
            state = run.state
            batch.name = run.name
            batch.state = state.name if state is not None else "Unknown"
            batch.message = state.message if state is not None else None
            if state is None:
                continue
            if state.is_final():
                lost += self.finish(batch)
            elif state.is_running() and not self._alive(run):
                message = (f"lost: no heartbeat for {self.lost_after_s:.0f} s (its worker host or "
                           "process died); the night re-dispatches its samples")
                self.log.warning("batch run %s on slot %s %s", batch.name, batch.slot.label, message)
                self._crash(batch, message)
                batch.state, batch.message = "Crashed", message
                if batch.slot.queue != DEFAULT_QUEUE:
                    self.lost_on[batch.slot.queue] = time.monotonic()
                lost += self.finish(batch)
            elif (state.is_scheduled() or state.is_pending()) and batch.slot.queue != DEFAULT_QUEUE \
                    and batch.slot.queue not in live_queues:
                message = f"cancelled: the worker of slot {batch.slot.label} is gone; re-dispatched"
                self.log.warning("batch run %s %s", batch.name, message)
                self.client.set_flow_run_state(batch.run_id, Cancelled(message=message), force=True)
                batch.state, batch.message, batch.ended = "Cancelled", message, True
                for sample in batch.samples:  # never ran: not an attempt
                    self.dispatches[str(sample.path)] -= 1
                lost += batch.samples
        return lost

    def finish(self, batch: _Batch) -> list[Sample]:
        """Sort an ended batch run's samples into done, failed and lost (returned)."""
        batch.ended = True
        batch.children = self._children(batch)
        lost = []
        for sample in batch.samples:
            child = batch.children.get(str(sample.path))
            child_id = str(child.id) if child is not None else None
            if is_finished(sample):
                self.outcomes[str(sample.path)] = outcome_from_outputs(
                    sample, "done", flow_run_id=child_id, batch_run=batch.name)
            elif child is not None and child.state is not None and child.state.is_failed():
                self.outcomes[str(sample.path)] = outcome_from_outputs(
                    sample, "failed", flow_run_id=child_id, batch_run=batch.name,
                    error=child.state.message or "its predict run failed")
            else:
                self.history.setdefault(str(sample.path), []).append(
                    f"batch run {batch.name} ended {batch.state}: {batch.message or 'no message'}")
                lost.append(sample)
        return lost

    def give_up(self, sample: Sample, why: str) -> None:
        history = "; ".join(self.history.get(str(sample.path), []))
        self.outcomes[str(sample.path)] = outcome_from_outputs(
            sample, "missing", error=f"{why}" + (f" ({history})" if history else ""))

    def redispatch(self, lost: list[Sample], live: list[Slot]) -> None:
        limit = 1 + self.settings.redispatch_attempts
        again = []
        for sample in self.waiting + lost:
            if self.dispatches.get(str(sample.path), 0) >= limit:
                self.give_up(sample, f"lost {self.dispatches[str(sample.path)]} time(s), the "
                             "re-dispatch limit")
            else:
                again.append(sample)
        self.waiting = []
        if not again:
            return
        trusted = self.trusted(live)
        if not trusted:
            self.log.warning("no live GPU slot to re-dispatch %s to; waiting for a worker",
                             ", ".join(s.name for s in again))
            self.waiting = again
            return
        self.log.warning("re-dispatching %s", ", ".join(s.name for s in again))
        self.spread(again, trusted)

    def trusted(self, live: list[Slot]) -> list[Slot]:
        """The live slots work may be re-dispatched to: not one whose batch run was lost less than
        ``slot_stale_s`` ago. Its queue still looks polled for that long after its worker died, so
        only a poll AFTER the window proves the worker is back (its samples then wait, rather than
        go to a host that is gone)."""
        now = time.monotonic()
        return [s for s in live if now - self.lost_on.get(s.queue, -math.inf) > self.settings.slot_stale_s]

    def time_out(self, timeout_s: float) -> None:
        for batch in self.active:
            message = f"cancelled: the night's dispatch timed out after {timeout_s:.0f} s"
            self.client.set_flow_run_state(batch.run_id, Cancelling(message=message), force=True)
            batch.state, batch.message = "Cancelling", message
            self.finish(batch)
            for sample in batch.samples:
                if str(sample.path) not in self.outcomes:
                    self.give_up(sample, f"dispatch timed out after {timeout_s:.0f} s "
                                 f"(batch run {batch.name} was still {batch.state})")
        for sample in self.waiting:
            self.give_up(sample, f"dispatch timed out after {timeout_s:.0f} s with no live GPU slot")
        self.waiting = []

    def records(self) -> tuple[BatchRecord, ...]:
        return tuple(BatchRecord(
            name=b.name, flow_run_id=str(b.run_id), work_queue=b.slot.label, attempt=b.attempt,
            samples=tuple(s.name for s in b.samples), state=b.state, message=b.message,
            model_loads=_loads_of([s for s in b.samples if str(s.path) in self.outcomes
                                   and self.outcomes[str(s.path)].batch_run == b.name]),
        ) for b in self.batches)


def dispatch_night(
    pending: Sequence[Sample],
    params: Mapping[str, Any],
    settings: DispatchSettings,
    night_id: str,
    run_logger: Any,
    on_cpu: bool = False,
) -> DispatchResult:
    """Run ``pending`` as batch runs on the GPU pool's live slots; see the module docstring."""
    samples = list(pending)
    with get_client(sync_client=True) as client:
        night = _Night(client, night_id, params, settings, run_logger)
        slots = live_slots(client, settings.gpu_pool, settings.slot_stale_s)
        timeout = settings.timeout_s if settings.timeout_s is not None else night_timeout(
            sum(input_size(s.path) for s in samples), len(slots), on_cpu, settings.redispatch_attempts)
        deadline = time.monotonic() + timeout
        run_logger.info("%d sample(s) over %d live GPU slot(s) of %s (%s); deadline in %.0f s",
                        len(samples), len(slots), settings.gpu_pool,
                        ", ".join(s.label for s in slots) or "none", timeout)
        if slots:
            night.spread(samples, slots)
        else:
            run_logger.error("no live GPU worker on work pool %s: start one per GPU with "
                             "deployments/start-worker.sh", settings.gpu_pool)
            night.waiting = samples
        while (night.active or night.waiting) and time.monotonic() < deadline:
            time.sleep(settings.poll_s)
            live = live_slots(client, settings.gpu_pool, settings.slot_stale_s)
            night.redispatch(night.poll(live), live)
        if night.active or night.waiting:
            night.time_out(timeout)
        outcomes = tuple(night.outcomes[str(s.path)] for s in samples)
        return DispatchResult(outcomes, night.records(), tuple(s.label for s in slots))
