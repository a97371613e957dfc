"""Integration tests: Prefect offline and quiet, and the checkout importable as ``flows``; one
demo run (:class:`DemoRun`) shared by the tests of the calling options, calibration and report.

The environment is set here (before any test module imports prefect) instead of in each Prefect
test module.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # pool threads log too

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


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
