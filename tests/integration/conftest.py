"""Integration tests: the checkout importable as ``flows``, and the pipeline runs that several
test modules read (each run once per session). Prefect's offline settings: tests/conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.integration.pipeline_helpers import (  # noqa: E402
    SAMPLE_RECORDS,
    SHARD_FRAMES,
    CliRun,
    model_args,
    run_cli_process,
    write_sample,
)


@pytest.fixture(scope="session")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``s.fa``: the first 16 records of the golden tiny input, the input of most runs."""
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("sample") / "s.fa",
                        SAMPLE_RECORDS)


@pytest.fixture(scope="session")
def demo_model_args(demo_models) -> list[str]:  # type: ignore[no-untyped-def]
    return model_args(demo_models)


@pytest.fixture(scope="session")
def cli_standard_run(sample: Path, demo_model_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """``python -m virnucpro.cli -v predict s.fa --device cpu --shard-frames 8 --no-persistent-models``
    with the demo models, run once, as users run it, from an empty directory without ``--output-dir``.

    The reference standard-mode run: test_cli reads it for the outputs, provenance, ``-v``,
    ``--shard-frames`` and the default output directory; test_persistent_workers compares the
    persistent pool against it (same shards, so bit for bit), test_flow the flow.
    """
    cwd = tmp_path_factory.mktemp("cli-standard")
    run = run_cli_process(["-v", "predict", str(sample), "--device", "cpu", "--shard-frames", str(SHARD_FRAMES),
                           "--no-persistent-models", *demo_model_args], cwd, cwd / "s_virnucpro")
    assert run.exit_code == 0, run.output[-4000:]
    return run
