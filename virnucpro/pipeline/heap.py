"""The garbage collector: in a long-lived worker, collect once after loading, then freeze; in a
run's last steps, paused.

Loading and compiling a model leaves a large heap of long-lived Python objects (modules,
compiled graphs, guards) plus garbage. Python's full collections walk every tracked object, so
one falling due in the middle of a stage stalls the thread that feeds the GPU. Measured on an
H200 (docs/benchmarks.md, 2026-12-01 fourth session): a full collection right after the ESM-2
section took ~0.25 s inside the DNABERT-S stage and cost it 9% of its throughput (17.6k against
19.3k frames/s); with the heap frozen, the same run right after ESM-2 kept 19.2k.

In the run's own process, :func:`collection_paused` keeps the collector off while the last steps
build their many small records, none of them cyclic garbage.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["settle_heap", "freeze_heap", "collection_paused"]

_pause_lock = threading.Lock()
_pauses = 0  # collection_paused blocks entered and not left yet, over every thread
_enabled_before = False  # the collector's state when the first of them was entered


def settle_heap(*, released: bool = False) -> int:
    """Collect what loading left behind, then move every surviving object out of the
    collector's view (``gc.freeze``): later collections scan only what shards allocate.

    ``released``: a model was just released; what was frozen is unfrozen first, so its objects
    are collected (a walk of the whole heap). Otherwise (a second model warmed up) only what is
    not frozen yet is collected: on an H200 worker the whole walk took ~0.2 s (py-spy, run M2 in
    docs/benchmarks.md), inside the run's first stage (ESM-2's deferred warm-up). Returns the number of frozen objects.
    """
    if released:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def freeze_heap() -> int:
    """:func:`settle_heap` without its collection: every object, garbage too, out of the
    collector's view at once. For a worker's start, where the walk (~0.2 s on an H200 host, run
    M2 in docs/benchmarks.md) would delay the run's first stage: the worker collects after its
    first stage's end instead (``settle_heap(released=True)``), in the next stage's first
    finished batch, while the GPU computes the batch after it.
    Returns the number of frozen objects."""
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block; on leaving it, even by an error,
    the collector is as it was before.

    For a stretch that builds many small objects which live until it ends (a run's tables,
    calls and report page): each young collection walks what was made since the last, and a
    full one every tracked object of the process (torch's modules, Prefect's...), to free no
    cycle; reference counting frees what dies on the way. Blocks may nest and overlap between
    threads: the state before the first one entered is restored when the last one is left.
    """
    global _pauses, _enabled_before
    with _pause_lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _enabled_before:
                gc.enable()
