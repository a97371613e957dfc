"""``virnucpro validate-precision`` on the demo models, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from virnucpro.cli import cli
from virnucpro.config import Precision
from virnucpro.validation import validate_precision


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (golden_tiny_dir / "shared_real.fa").read_text()
    out = tmp_path_factory.mktemp("vp") / "s.fa"
    out.write_text("".join(">" + r for r in text.split(">")[1:][:12]))
    return out


def test_validate_precision_command(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    json_out = tmp_path / "agreement.json"
    result = CliRunner().invoke(cli, [
        "validate-precision", str(sample), "--dnabert-model", str(demo_models.dnabert),
        "--esm-model", str(demo_models.esm), "--classifier", str(demo_models.classifier(500)),
        "--device", "cpu", "--precisions", "bf16,fp16", "--json", str(json_out),
    ])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("bf16      DNABERT-S") for line in lines)
    assert any(line.startswith("fp16      ESM-2") for line in lines)
    data = json.loads(json_out.read_text())
    assert [r["precision"] for r in data["rows"]] == ["bf16", "fp16"]
    assert data["n_frames"] > 10 and data["device"] == "cpu"
    for row in data["rows"]:
        assert row["frame_label_agreement"] >= 0.9 and row["chunk_label_agreement"] >= 0.9
        for model in row["models"]:
            assert 0.99 < model["cosine_min"] <= model["cosine_median"] <= 1.0 + 1e-9


def test_fp32_is_the_reference_and_the_sample_is_capped(sample: Path, demo_models) -> None:  # type: ignore[no-untyped-def]
    result = validate_precision(sample, demo_models.dnabert, demo_models.esm, demo_models.classifier(500),
                                precisions=[Precision.FP32, Precision.BF16], max_frames=10)
    assert [r.precision for r in result.rows] == ["bf16"]  # fp32 is the reference, not a row
    assert result.n_frames == 10 and result.notes


def test_bad_precision_list_is_a_clear_error(sample: Path, demo_models) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, [
        "validate-precision", str(sample), "--dnabert-model", str(demo_models.dnabert),
        "--esm-model", str(demo_models.esm), "--classifier", str(demo_models.classifier(500)),
        "--device", "cpu", "--precisions", "bf8",
    ])
    assert result.exit_code != 0 and "bf8" in result.output
