"""A progress artifact per feature stage of a run, updated as batches finish (frames, rate, ETA).

The engine calls back with a :class:`~virnucpro.pipeline.work_queue.Progress` whenever frames
were computed (including batches inside a shard still running, so a one-shard sample moves too);
:class:`StageProgress` creates the stage's progress artifact at the first call and updates it at
most every ``every_s`` seconds (and always at the stage's last call), so the API is not asked
once per batch. (The rates are in the run's logs already: the engine logs them every 10 s.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from virnucpro.orchestration.artifacts import sample_key
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.work_queue import Progress

__all__ = ["StageProgress", "progress_text"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(p: Progress) -> str:
    """``ESM-2: 1,200/5,000 frames (2/8 shards), 350 frames/s, ETA 11 s``."""
    eta = "done" if p.fraction >= 1.0 else f"ETA {_duration(p.eta_seconds)}"
    return (f"{p.stage.label}: {p.frames_done:,}/{p.frames_total:,} frames "
            f"({p.shards_done}/{p.shards_total} shards), {p.frames_per_s:,.0f} frames/s, "
            f"{p.tokens_per_s:,.0f} tokens/s, {eta}")


class StageProgress:
    """The ``on_progress`` callback of one run: one progress artifact per stage, keyed
    ``<stage>-progress-<sample>`` (e.g. ``esm-progress-sample-1`` for ``sample_1.fa.gz``)."""

    def __init__(self, input_path: Path | str, every_s: float = 2.0) -> None:
        self.input_path = input_path
        self.every_s = every_s
        self._ids: dict[FeatureStage, UUID] = {}
        self._last: dict[FeatureStage, float] = {}
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        final = p.shards_done >= p.shards_total
        now = time.monotonic()
        with self._lock:
            artifact = self._ids.get(p.stage)
            if artifact is not None and not final and now - self._last.get(p.stage, 0.0) < self.every_s:
                return
            self._last[p.stage] = now
        text = progress_text(p)
        percent = round(100.0 * p.fraction, 1)
        if artifact is None:
            artifact = create_progress_artifact(
                progress=percent, key=sample_key(f"{p.stage.value}-progress", self.input_path),
                description=text,
            )
            with self._lock:
                self._ids[p.stage] = artifact
        else:
            update_progress_artifact(artifact, progress=percent, description=text)
