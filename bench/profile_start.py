"""Where a worker's start goes: one worker's model loading and warm-up, in this process, profiled.

    python bench/profile_start.py --models /tmp/vbench/models --out $OUT/start [--precision auto]

Runs what a pool worker runs after its imports (:meth:`virnucpro.pipeline.worker._Worker.load_all`
for both models) under ``cProfile``, with the pool's compile caches (the user's cache directory,
:func:`~virnucpro.pipeline.compile_cache.compile_cache_env`). Writes ``start.prof``
(for ``python -m pstats``) and ``start.txt``: the phases the worker reports and the functions
that took the most time, cumulative and own. The models folder is the benchmark's
(``bench/run_bench.py --work DIR`` writes ``DIR/models``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import queue
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, required=True, help="the benchmark's models folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--precision", default="auto")
    p.add_argument("--top", type=int, default=45)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    from virnucpro.pipeline.compile_cache import compile_cache_env

    os.environ.update(compile_cache_env())
    import torch

    from virnucpro.config import Precision
    from virnucpro.pipeline.messages import WorkerSpec
    from virnucpro.pipeline.stage import FeatureStage
    from virnucpro.pipeline.worker import _Worker

    imported = time.perf_counter() - started
    on_gpu = torch.cuda.is_available()
    precision = Precision(args.precision)
    if precision is Precision.AUTO:
        precision = Precision.FP16 if on_gpu else Precision.FP32
    spec = WorkerSpec(dnabert_path=args.models / "dnabert_s", esm_path=args.models / "esm2_t36_3B_UR50D.pt",
                      precision=precision, on_gpu=on_gpu, preload=(FeatureStage.DNABERT, FeatureStage.ESM))

    t = time.perf_counter()
    if on_gpu:
        torch.cuda.init()
        torch.empty(1, device="cuda")
    cuda_init = time.perf_counter() - t
    results: queue.SimpleQueue[object] = queue.SimpleQueue()  # what the worker would send its parent
    worker = _Worker("profile", spec, results)
    profile = cProfile.Profile()
    t = time.perf_counter()
    profile.enable()
    worker.load_all(spec.preload)
    profile.disable()
    load_all = time.perf_counter() - t
    profile.dump_stats(str(args.out / "start.prof"))
    text = io.StringIO()
    text.write(f"imports {imported:.2f} s, CUDA init {cuda_init:.2f} s, load_all {load_all:.2f} s\n")
    text.write(f"read: {worker.load_seconds}\nwarm-up: {worker.compile_seconds}\n"
               f"warm-up steps: {worker.warmup_steps}\n")
    sent = []
    while not results.empty():
        sent.append(type(results.get()).__name__)
    text.write(f"messages sent while loading: {sent or 'none'}\n\n")
    for order in ("cumulative", "tottime"):
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats(order).print_stats(args.top)
    (args.out / "start.txt").write_text(text.getvalue())
    sys.stdout.write(text.getvalue()[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
