"""Integration tests: the checkout importable as ``flows``, and the pipeline runs that several
test modules read (each run once per session): the standard CLI run, and one demo run
(:class:`DemoRun`) shared by the tests of the calling options, calibration and report. Prefect's
offline settings: tests/conftest.py.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
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
    with the demo models, run once, as users run it, from an empty directory.

    The reference standard-mode run: test_cli reads it for the outputs, provenance, ``-v``,
    ``--shard-frames`` and the default output directory; test_persistent_workers compares the
    persistent pool against it (same shards, so bit for bit), test_flow the flow.
    """
    cwd = tmp_path_factory.mktemp("cli-standard")
    run = run_cli_process(["-v", "predict", str(sample), "--output-dir", str(cwd / "s_virnucpro"),
                           "--device", "cpu", "--shard-frames", str(SHARD_FRAMES),
                           "--no-persistent-models", *demo_model_args], cwd, cwd / "s_virnucpro")
    assert run.exit_code == 0, run.output[-4000:]
    return run


# --- one demo run shared by the calling-option, calibration and report tests ----------------
HOSTILE_ID = "odd<id>&co"
HOSTILE_DESCRIPTION = '<script>alert("x")</script> & "quoted"'


@dataclass(frozen=True)
class DemoRun:
    """``virnucpro predict`` (default options) on 24 records of the golden input plus one record
    with HTML in its ID and description, on the demo models; ``variant`` re-runs it with other
    options into a copy of its output directory (the finished work is reused: only the report
    step runs again)."""

    input_fasta: Path
    output_dir: Path
    model_args: tuple[str, ...]

    def predict_args(self, output_dir: Path, *options: str) -> list[str]:
        return ["predict", str(self.input_fasta), "--output-dir", str(output_dir), "--device", "cpu",
                *self.model_args, *options]

    def variant(self, folder: Path, *options: str) -> Path:
        from click.testing import CliRunner

        from virnucpro.cli import cli

        out = folder / "out"
        shutil.copytree(self.output_dir, out)
        result = CliRunner().invoke(cli, self.predict_args(out, *options), obj={}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return out


@pytest.fixture(scope="session")
def demo_run(golden_tiny_dir: Path, demo_models, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from virnucpro.cli import cli

    folder = tmp_path_factory.mktemp("demo_run")
    records = [">" + r for r in (golden_tiny_dir / "shared_real.fa").read_text().split(">")[1:25]]
    hostile = records[2].split("\n", 1)[1]  # a real sequence under a header full of HTML
    sample = folder / "sample.fa"
    sample.write_text("".join(records) + f">{HOSTILE_ID} {HOSTILE_DESCRIPTION}\n{hostile}")
    run = DemoRun(sample, folder / "baseline",
                  ("--dnabert-model", str(demo_models.dnabert), "--esm-model", str(demo_models.esm),
                   "--classifier", str(demo_models.classifier(500))))
    result = CliRunner().invoke(cli, run.predict_args(run.output_dir), obj={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run
