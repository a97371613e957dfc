"""Preparing the next sample in the background: reused by its run, lock held meanwhile, errors
left to the run itself."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.errors import InputError
from virnucpro.pipeline.output_lock import output_lock
from virnucpro.pipeline.prefetch import PreparePrefetch
from virnucpro.pipeline.stages import prepare_stage


def test_prefetched_preparation_is_reused_by_the_run(golden_tiny_dir: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sample = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path / "s.fa", 5)
    config = cpu_config(sample, tmp_path / "out", demo_models)
    prefetch = PreparePrefetch()
    prefetch.start(config)
    prefetch.wait()
    assert prefetch.error is None and prefetch.prepared is not None and not prefetch.prepared.reused
    again = prepare_stage(config)
    assert again.reused and again.n_frames == prefetch.prepared.n_frames > 0
    assert [s.path for s in again.shards] == [s.path for s in prefetch.prepared.shards]


def test_prefetch_holds_the_output_lock_and_reports_errors_quietly(
    demo_models, tmp_path: Path, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    config = cpu_config(empty, tmp_path / "out", demo_models)
    with output_lock(config.output_dir):  # a run holds the directory: the prefetch stands back
        prefetch = PreparePrefetch()
        with caplog.at_level(logging.INFO):
            prefetch.start(config)
            prefetch.wait()
    assert prefetch.prepared is None and "OutputError" in (prefetch.error or "")
    prefetch.start(config)  # free now: the empty input fails inside the thread, not here
    prefetch.wait()
    assert "InputError" in (prefetch.error or "") and "its own run will prepare it" in caplog.text
    with pytest.raises(InputError):
        prepare_stage(config)  # the run itself reports it
    assert prefetch.started == 2
