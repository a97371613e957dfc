"""A run's report, end checkpoint and finalize run with the garbage collector paused, the
steps before with it on; after the run it is on again."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.steps import DirectSteps, Step

class _RecordingSteps(DirectSteps):
    """Calls each step directly, noting whether the collector was on when it started."""

    def __init__(self) -> None:
        self.enabled: list[tuple[str, bool]] = []

    def run(self, step: Step, *args: Any) -> Any:
        self.enabled.append((step.name if step.name != "memory-checkpoint" else f"checkpoint-{args[0]}",
                             gc.isenabled()))
        return super().run(step, *args)


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("in") / "s.fa", 6)


def test_the_last_steps_run_with_the_collector_paused(
    sample: Path, demo_models, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    assert gc.isenabled()
    steps = _RecordingSteps()
    run_prediction(cpu_config(sample, tmp_path / "out", demo_models), steps=steps)
    assert gc.isenabled()  # as it was before the run
    off = [name for name, enabled in steps.enabled if not enabled]
    assert off == ["report", "checkpoint-end", "finalize"]
    assert ("classify", True) in steps.enabled and ("prepare", True) in steps.enabled

