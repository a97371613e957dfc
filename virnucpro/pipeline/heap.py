"""The garbage collector in a long-lived worker: collect once after loading, then freeze.

Loading and compiling a model leaves a large heap of long-lived Python objects (modules,
compiled graphs, guards) plus garbage. Python's full collections walk every tracked object, so
one falling due in the middle of a stage stalls the thread that feeds the GPU. Measured on an
H200 (docs/benchmarks.md, 2026-12-01 fourth session): a full collection right after the ESM-2
section took ~0.25 s inside the DNABERT-S stage and cost it 9% of its throughput (17.6k against
19.3k frames/s); with the heap frozen, the same run right after ESM-2 kept 19.2k.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


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
