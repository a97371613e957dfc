"""Paired A/B of the whole `virnucpro predict` process: two code trees, run alternately.

    python bench/process_ab.py --tree A=/path/to/old --tree B=. --pairs 4 \
        --models /tmp/vbench/models --sample /tmp/vbench/sample_main.fa --out $OUT/ab

Each tree is a folder holding a ``virnucpro`` package (a checkout, or ``git archive COMMIT
virnucpro | tar -x -C DIR``). Each pair runs A then B, the next B then A, so a machine that drifts
(clocks, page cache) favours neither; one uncounted run of each comes first. The command is the benchmark's process part (default
precision, ``--persistent-models``, ``--shard-frames 1024``, ``-v``); every run's log is kept.
Writes ``ab.md`` (each wall, each tree's median, B's median over A's, and each run's steps
in seconds from its launch) and every run's log under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def command(sample: Path, models: Path, out: Path, shard_frames: int) -> list[str]:
    return [sys.executable, "-m", "virnucpro.cli", "predict", str(sample), "--output-dir", str(out),
            "--dnabert-model", str(models / "dnabert_s"), "--esm-model", str(models / "esm2_t36_3B_UR50D.pt"),
            "--classifier", str(models / "500_model.safetensors"), "--persistent-models", "--no-resume",
            "--shard-frames", str(shard_frames), "-v"]


MILESTONES = {
    "first line": "memory checkpoint start",
    "worker spawned": "started worker ",
    "input prepared": "virnucpro.pipeline.stages: prepared ",
    "workers ready": "virnucpro.pipeline.lease: started ",
    "after DNABERT-S": "memory checkpoint after-dnabert",
    "after ESM-2": "memory checkpoint after-esm",
    "end checkpoint": "memory checkpoint end",
}
"""A run's log lines that mark its steps (the first line holding each text)."""


def milestones(log: str, launched: float) -> dict[str, float]:
    """Seconds from the launch to each of :data:`MILESTONES` (the lines' own clock, ms)."""
    found: dict[str, float] = {}
    for line in log.splitlines():
        for name, text in MILESTONES.items():
            if name not in found and text in line:
                try:
                    at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                except ValueError:
                    continue
                found[name] = round(at - launched, 2)
    return found


def run_once(tree: Path, cmd: list[str], work: Path, log: Path) -> tuple[float, int, dict[str, float]]:
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree.resolve())] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != Path.cwd()])}
    launched = time.time()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    wall = time.perf_counter() - started
    log.write_text(proc.stderr)
    return wall, proc.returncode, milestones(proc.stderr, launched)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", required=True, help="NAME=FOLDER, twice")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--sample", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shard-frames", type=int, default=1024)
    p.add_argument("--work", type=Path, default=Path("/tmp/virnucpro-ab-run"),
                   help="the runs' output folder (emptied before each run; keep it out of --out)")
    args = p.parse_args(argv)
    args.sample, args.models, args.out = args.sample.resolve(), args.models.resolve(), args.out.resolve()
    trees = dict(t.split("=", 1) for t in args.tree)
    if len(trees) != 2:
        p.error("give exactly two --tree NAME=FOLDER")
    (a, tree_a), (b, tree_b) = trees.items()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    cmd = command(args.sample, args.models, work, args.shard_frames)
    walls: dict[str, list[float]] = {a: [], b: []}
    timelines: list[tuple[str, int, dict[str, float], float]] = []
    for name, tree in ((a, tree_a), (b, tree_b)):  # not counted: bytecode caches, the page cache
        wall, rc, _ = run_once(Path(tree), cmd, work, args.out / f"{name}-warm.log")
        sys.stdout.write(f"warm {name}: {wall:.2f} s (rc {rc})\n")
        if rc:
            return rc
    for pair in range(args.pairs):
        order = [(a, tree_a), (b, tree_b)] if pair % 2 == 0 else [(b, tree_b), (a, tree_a)]
        for name, tree in order:
            wall, rc, marks = run_once(Path(tree), cmd, work, args.out / f"{name}-{pair + 1}.log")
            if rc:
                sys.stderr.write(f"{name} run {pair + 1} failed (rc {rc}); see {name}-{pair + 1}.log\n")
                return rc
            walls[name].append(wall)
            timelines.append((name, pair + 1, marks, wall))
            sys.stdout.write(f"pair {pair + 1} {name}: {wall:.2f} s\n")
    med = {name: statistics.median(w) for name, w in walls.items()}
    lines = [f"# Whole process A/B, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
             f"`{' '.join(cmd[1:])}`\n", "| tree | walls (s) | median (s) |", "|---|---|---:|"]
    lines += [f"| {name} ({trees[name]}) | {', '.join(f'{w:.2f}' for w in walls[name])} | {med[name]:.2f} |"
              for name in (a, b)]
    lines.append(f"\n{b} / {a} median wall: {med[b] / med[a]:.3f}\n")
    lines.append("Each run's steps, seconds from its launch (the log lines' clock):\n")
    lines.append("| run | " + " | ".join(MILESTONES) + " | exit |")
    lines.append("|---|" + "---:|" * (len(MILESTONES) + 1))
    lines += [f"| {name} {pair} | " + " | ".join(f"{marks.get(m, float('nan')):.2f}" for m in MILESTONES)
              + f" | {wall:.2f} |" for name, pair, marks, wall in timelines]
    (args.out / "ab.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
