"""The dispatcher's bookkeeping with several tasks per worker, on fake worker slots (no processes):
who gets which task, results matched by task ID, a dead worker's tasks all retried in order."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.messages import EmbedTask, TaskDone, WorkerSpec
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool, WorkerInfo, _Job, _Slot
from virnucpro.pipeline.stage import FeatureStage


class _Conn:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, item: object) -> None:
        self.sent.append(item)


class _Alive:
    def is_alive(self) -> bool:
        return True


def _pool(n_workers: int, tasks_per_worker: int) -> PersistentWorkerPool:
    devices = [WorkerDevice(name=f"cpu{i}", cuda_visible_devices=None) for i in range(n_workers)]
    spec = WorkerSpec.__new__(WorkerSpec)  # never started: the dispatcher's logic only
    pool = PersistentWorkerPool(devices, spec, tasks_per_worker=tasks_per_worker)
    pool._slots = []
    for device in devices:
        slot = _Slot(WorkerInfo(name=device.name, device=device), _Alive(), _Conn(), None)
        slot.ready = True
        pool._slots.append(slot)
    return pool


def _queue(pool: PersistentWorkerPool, n: int) -> list[_Job]:
    jobs = [_Job(EmbedTask(i, FeatureStage.ESM, Path(f"s{i}"), Path(f"o{i}")), Future()) for i in range(n)]
    pool._pending.extend(jobs)
    return jobs


def _sent(slot: _Slot) -> list[int]:
    return [task.task_id for task in slot.task_conn.sent]


def test_each_worker_gets_one_task_before_any_gets_two() -> None:
    pool = _pool(2, tasks_per_worker=2)
    _queue(pool, 5)
    pool._assign()
    a, b = pool._slots
    assert _sent(a) == [0, 2] and _sent(b) == [1, 3]
    assert [job.task.task_id for job in pool._pending] == [4]
    single = _pool(2, tasks_per_worker=1)
    _queue(single, 5)
    single._assign()
    assert [_sent(s) for s in single._slots] == [[0], [1]]
    with pytest.raises(ValueError, match="at least 1"):
        _pool(1, tasks_per_worker=0)


def test_results_are_matched_by_task_id_and_free_a_place() -> None:
    pool = _pool(1, tasks_per_worker=2)
    jobs = _queue(pool, 3)
    pool._assign()
    (slot,) = pool._slots
    done = TaskDone(worker="cpu0", task_id=1, n_frames=1, n_tokens=3, padded_tokens=3, seconds=0.1,
                    peak_mib=0.0, oom_retries=0)
    pool._handle(slot, done, starting=False)  # the second task finishes first
    assert jobs[1].future.result() is done and not jobs[0].future.done()
    assert list(slot.jobs) == [0]
    pool._assign()
    assert _sent(slot) == [0, 1, 2]


def test_a_dead_workers_tasks_are_all_retried_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(1, tasks_per_worker=2)
    _queue(pool, 3)
    pool._assign()
    (slot,) = pool._slots
    slot.process.exitcode = -9
    slot.process.pid = 1
    replacement = _Slot(slot.info, _Alive(), _Conn(), None)
    monkeypatch.setattr(pool, "_spawn", lambda info: replacement)
    monkeypatch.setattr("virnucpro.pipeline.persistent_pool._close_conns", lambda s: None)
    pool._replace(slot, starting=False)
    assert [job.task.task_id for job in pool._pending] == [0, 1, 2]
    assert [job.attempts for job in pool._pending] == [1, 1, 0]  # the third was never sent
    assert len(pool._pending[0].errors) == 1 and "worker died" in pool._pending[0].errors[0]
