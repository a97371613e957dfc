"""settle_heap: the worker collects once after loading a model, then freezes the heap (a GPU
worker of a run's own start: freezes at once, collects at the first stage's end); collection_paused: the collector off for a block, then as it was."""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnucpro.config import Precision
from virnucpro.pipeline.heap import collection_paused, freeze_heap, settle_heap
from virnucpro.pipeline.stage import FeatureStage


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # leave the test session's collector as it was
    (gc.enable if enabled else gc.disable)()


def test_settle_heap_collects_garbage_and_freezes_survivors() -> None:
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    survivor = _Node()
    assert any(o is survivor for o in gc.get_objects())
    frozen = settle_heap()
    assert dead() is None  # the cycle left behind was collected first
    assert frozen == gc.get_freeze_count() > 0
    assert not any(o is survivor for o in gc.get_objects())  # out of every later collection's scan


def test_settle_heap_after_a_release_collects_frozen_objects_dropped_since() -> None:
    released = _Node()
    dead = weakref.ref(released)
    settle_heap()
    del released
    gc.collect()
    assert dead() is not None  # frozen: a plain collection does not see it
    settle_heap()
    assert dead() is not None  # a second warm-up collects only what is not frozen yet
    settle_heap(released=True)
    assert dead() is None  # unfrozen first, then collected


def test_a_second_settle_collects_the_new_garbage_and_freezes_the_new_survivors() -> None:
    settle_heap()
    before = gc.get_freeze_count()
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    survivors = [_Node() for _ in range(100)]
    assert settle_heap() >= before + 100
    assert dead() is None
    assert not any(o is survivors[0] for o in gc.get_objects())


def test_worker_settles_after_load_and_frees_a_released_model(demo_models, tmp_path: Path) -> None:
    from virnucpro.pipeline.messages import WorkerSpec
    from virnucpro.pipeline.stage import FeatureStage
    from virnucpro.pipeline.worker import _Worker

    spec = WorkerSpec(dnabert_path=demo_models.dnabert, esm_path=demo_models.esm, precision=Precision.FP32,
                      on_gpu=False, preload=())
    worker = _Worker("w0", spec, queue.Queue())
    gc.unfreeze()
    embedder = worker.load(FeatureStage.DNABERT)
    assert not any(o is embedder for o in gc.get_objects())  # frozen with the model
    holder = _Node()
    holder.model = embedder.model  # type: ignore[attr-defined]  # a cycle holding the model, as compiled graphs do
    settle_heap()  # the cycle is frozen too, as one made while loading is
    model = weakref.ref(embedder.model)
    del embedder, holder
    worker.release(FeatureStage.DNABERT)
    assert model() is None  # released: unfrozen and collected


def test_freeze_heap_keeps_garbage_until_a_full_settle() -> None:
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    assert freeze_heap() == gc.get_freeze_count() > 0
    gc.collect()
    assert dead() is not None  # frozen uncollected: out of every collection's view
    settle_heap(released=True)
    assert dead() is None


def _start_worker(demo_models, at_stage_end: bool):  # type: ignore[no-untyped-def]
    """A CPU worker (the flag is a GPU run-start worker's) with an unreachable cycle left behind
    before its DNABERT-S warm-up, as loading leaves some; the automatic collector off."""
    from virnucpro.pipeline.messages import WorkerSpec
    from virnucpro.pipeline.worker import _Worker

    spec = WorkerSpec(dnabert_path=demo_models.dnabert, esm_path=demo_models.esm, precision=Precision.FP32,
                      on_gpu=False, preload=())
    worker = _Worker("w0", spec, queue.Queue(), collect_at_stage_end=at_stage_end)
    gc.unfreeze()
    gc.disable()  # no automatic collection meanwhile: only the worker's own
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    worker.load(FeatureStage.DNABERT)
    return worker, dead


@pytest.mark.parametrize("at_stage_end", [False, True])
def test_a_run_start_worker_defers_its_collection_past_the_stage_end(demo_models, at_stage_end: bool) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.messages import StageEnd

    worker, dead = _start_worker(demo_models, at_stage_end)
    assert worker.collection_due is at_stage_end
    assert (dead() is not None) is at_stage_end  # the warm-up only froze it
    ended = worker.end_stage(StageEnd(FeatureStage.DNABERT, release=False))
    assert ended.stage is FeatureStage.DNABERT
    # replied before collecting: the parent starts the next stage at once
    assert (dead() is not None) is at_stage_end and worker.collect_in_next_batch is at_stage_end
    worker.end_stage(StageEnd(FeatureStage.ESM, release=False))  # a stage with no batch: collects now
    assert dead() is None and not worker.collection_due and not worker.collect_in_next_batch


def test_the_deferred_collection_runs_in_the_next_stages_first_batch(demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.messages import EmbedTask, StageEnd
    from virnucpro.pipeline.shards import ShardFrame, write_shard

    worker, dead = _start_worker(demo_models, True)
    worker.end_stage(StageEnd(FeatureStage.DNABERT, release=False))
    assert dead() is not None
    frames = [ShardFrame(f"r{i}_F1", f"r{i}", f"r{i}_1", "ATG" * 40, "M" * 40) for i in range(3)]
    shard = write_shard(tmp_path / "s.tsv", 0, frames)
    worker.embed_task(EmbedTask(0, FeatureStage.DNABERT, shard.path, tmp_path / "s.npz"))
    worker.drain()
    assert (tmp_path / "s.npz").is_file()
    assert dead() is None and not worker.collection_due and not worker.collect_in_next_batch


def test_collection_paused_turns_the_collector_off_and_back_on() -> None:
    gc.enable()
    with collection_paused():
        assert not gc.isenabled()
        cycle = _Node()
        dead = weakref.ref(cycle)
        del cycle
        for _ in range(50_000):  # far past every generation's threshold
            _Node.__new__(_Node)
        assert dead() is not None  # no automatic collection inside
    assert gc.isenabled()
    gc.collect()
    assert dead() is None


def test_collection_paused_restores_the_collector_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError, match="inside"), collection_paused():
        raise RuntimeError("inside")
    assert gc.isenabled()


def test_collection_paused_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_nested_pauses_end_with_the_outermost() -> None:
    gc.enable()
    with collection_paused():
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause ended; the outer one still holds
    assert gc.isenabled()


def test_pauses_overlapping_in_two_threads_end_with_the_last_one_left() -> None:
    gc.enable()
    entered, leave = threading.Event(), threading.Event()
    states: list[bool] = []

    def other() -> None:
        with collection_paused():
            entered.set()
            leave.wait(10)
        states.append(gc.isenabled())

    thread = threading.Thread(target=other)
    with collection_paused():
        thread.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread's pause still holds
    leave.set()
    thread.join(10)
    assert states == [True] and gc.isenabled()
