"""settle_heap: the worker collects once after loading a model, then freezes the heap."""

from __future__ import annotations

import gc
import queue
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnucpro.config import Precision
from virnucpro.pipeline.heap import settle_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test session's collector as it was


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
