"""Prepare the next sample while the current one is on the GPUs (batches of samples).

Preparation (read, chunk, translate, write shards) is CPU work that a single run must finish
before its first GPU stage. In a batch — the nightly flow, one persistent pool for every sample —
the next sample's preparation can run during the current sample's DNABERT-S and ESM-2 stages
instead: :class:`PreparePrefetch` runs :func:`~virnucpro.pipeline.stages.prepare_stage` for it on a
background thread, holding that sample's output-directory lock, and the sample's own run later
finds the finished preparation and reuses it (the resume path: same input SHA-256, chunk length
and shard size). A prefetch that fails is only logged: the sample's own run prepares again and
reports the error where it belongs.

Call :meth:`PreparePrefetch.wait` before a run takes the lock of the sample being prefetched.
"""

from __future__ import annotations

import logging
import threading

from virnucpro.config import RunConfig
from virnucpro.pipeline.output_lock import output_lock
from virnucpro.pipeline.stages import PreparedSample, prepare_stage

__all__ = ["PreparePrefetch"]

logger = logging.getLogger(__name__)


class PreparePrefetch:
    """At most one background preparation at a time; ``prepared``/``error`` tell how it went."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self.prepared: PreparedSample | None = None
        self.error: str | None = None
        self.started = 0

    def start(self, config: RunConfig) -> None:
        """Prepare ``config``'s sample in the background (waits for an earlier one first)."""
        self.wait()
        self.prepared, self.error = None, None

        def run() -> None:
            try:
                with output_lock(config.output_dir):
                    self.prepared = prepare_stage(config)
            except Exception as exc:  # the sample's own run will prepare it and report the error
                self.error = f"{type(exc).__name__}: {exc}"
                logger.info("preparing %s ahead failed (%s); its own run will prepare it",
                            config.input_fasta, self.error)

        self._thread = threading.Thread(target=run, name="virnucpro-prefetch", daemon=True)
        self._thread.start()
        self.started += 1

    def wait(self) -> None:
        """Block until the background preparation (if any) is over."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
