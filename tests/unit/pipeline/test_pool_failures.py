"""How the pool treats a failed task: a disk error is final at once (no retry: the disk stays
full); any other error is retried. A worker killed mid-write leaves no partial file behind."""

from __future__ import annotations

import errno
from concurrent.futures import Future
from pathlib import Path

import pytest

from virnucpro.errors import DiskError
from virnucpro.pipeline.devices import WorkerDevice
from virnucpro.pipeline.messages import EmbedTask, TaskFailed, WorkerSpec
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool, WorkerInfo, _Job, _Slot
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.worker import task_failed


class _Conn:
    def send(self, item: object) -> None:
        pass


class _Process:
    pid = 1
    exitcode = -9

    def is_alive(self) -> bool:
        return True


def _pool_with_job(tmp_path: Path) -> tuple[PersistentWorkerPool, _Slot, _Job]:
    device = WorkerDevice(name="cpu", cuda_visible_devices=None)
    pool = PersistentWorkerPool([device], WorkerSpec.__new__(WorkerSpec))  # never started
    slot = _Slot(WorkerInfo(name="cpu", device=device), _Process(), _Conn(), None)
    slot.ready = True
    pool._slots = [slot]
    out = tmp_path / "features" / "dnabert" / "shard_000000.npz"
    job = _Job(EmbedTask(0, FeatureStage.DNABERT, tmp_path / "shard_000000.tsv", out), Future())
    pool._pending.append(job)
    pool._assign()
    return pool, slot, job


def test_a_full_disk_in_a_worker_fails_at_once_without_retry(tmp_path: Path) -> None:
    pool, slot, job = _pool_with_job(tmp_path)
    failed = task_failed("cpu", job.task, OSError(errno.ENOSPC, "No space left on device"))
    assert failed.errno == errno.ENOSPC and failed.error.startswith(f"{job.task.out_path}: no space left")
    pool._handle(slot, failed, starting=False)
    with pytest.raises(DiskError, match=rf"^{job.task.out_path}: no space left on the device") as caught:
        job.future.result(timeout=0)
    assert caught.value.exit_code == 5 and caught.value.errno == errno.ENOSPC
    assert job.attempts == 1 and not pool._pending  # not queued again
    translated = DiskError(f"{job.task.out_path}: the file system is read-only. ...", errno.EROFS)
    assert task_failed("cpu", job.task, translated) == TaskFailed("cpu", 0, str(translated), errno.EROFS)


def test_another_failure_is_retried(tmp_path: Path) -> None:
    pool, slot, job = _pool_with_job(tmp_path)
    failed = task_failed("cpu", job.task, RuntimeError("CUDA error: an illegal memory access"))
    assert failed.errno is None and failed.error == "RuntimeError: CUDA error: an illegal memory access"
    pool._handle(slot, failed, starting=False)
    assert not job.future.done() and list(pool._pending) == [job]
    assert task_failed("cpu", job.task, OSError(errno.EIO, "I/O error")).errno is None


def test_a_dead_workers_partial_feature_file_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool, slot, job = _pool_with_job(tmp_path)
    out = job.task.out_path
    out.parent.mkdir(parents=True)
    partial = out.with_name(f".{out.name}.0123456789ab.tmp")
    partial.write_bytes(b"half a feature file")
    monkeypatch.setattr(pool, "_spawn", lambda info: _Slot(info, _Process(), _Conn(), None))
    monkeypatch.setattr("virnucpro.pipeline.persistent_pool._close_conns", lambda s: None)
    pool._replace(slot, starting=False)
    assert not partial.exists() and list(pool._pending) == [job]  # removed, and the shard retried


def test_task_failed_reports_are_picklable() -> None:
    import pickle

    message = TaskFailed(worker="cpu", task_id=3, error="x", errno=errno.EROFS)
    assert pickle.loads(pickle.dumps(message)) == message
