"""A classifier that does not fit the encoders fails the run before any work (exit 3)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from virnucpro.cli import cli


def test_mismatched_classifier_fails_before_any_work(golden_tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "predict", str(golden_tiny_dir / "shared_real.fa"), "--output-dir", str(out), "--device", "cpu",
        "--dnabert-model", str(golden_tiny_dir / "dnabert_s_tiny_12h"),
        "--esm-model", str(golden_tiny_dir / "esm2_t36_tiny.pt"),
        "--classifier", str(golden_tiny_dir / "tiny_500_model.pth"),
    ], obj={})
    assert result.exit_code == 3, result.output
    assert "takes 48 features" in result.output and "gives 48" in result.output
    assert not (out / ".virnucpro_work" / "shards").exists()  # nothing was prepared or embedded
