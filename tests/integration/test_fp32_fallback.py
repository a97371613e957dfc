"""Below fp32, an embedding that comes out non-finite is computed again in fp32 (counted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.integration.pipeline_helpers import cpu_config, feature_matrix, write_sample
from virnucpro.config import GPU_DEFAULT_PRECISION, Precision
from virnucpro.pipeline.prediction import run_prediction


def test_auto_precision_is_fp16_on_a_gpu_and_fp32_on_the_cpu() -> None:
    assert GPU_DEFAULT_PRECISION is Precision.FP16
    assert Precision.AUTO.resolve(on_gpu=True) is Precision.FP16
    assert Precision.AUTO.resolve(on_gpu=False) is Precision.FP32


def test_a_non_finite_embedding_is_recomputed_in_fp32(golden_tiny_dir: Path, demo_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sample = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path / "s.fa", 4)
    reference = run_prediction(cpu_config(sample, tmp_path / "fp32", demo_models, persistent_models=True))
    victim = next(iter(feature_matrix(tmp_path / "fp32", "esm")))
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"nonfinite_frame": victim}))
    result = run_prediction(cpu_config(sample, tmp_path / "bf16", demo_models, persistent_models=True,
                                       precision=Precision.BF16))
    assert [s.fp32_recomputed for s in result.stages] == [1, 1]  # the victim, in both stages
    info = json.loads((tmp_path / "bf16" / "run_info.json").read_text())
    assert [s["fp32_recomputed"] for s in info["stages"]] == [1, 1]
    for stage in ("dnabert", "esm"):  # the victim's row is the fp32 model's, alone in its batch
        np.testing.assert_allclose(feature_matrix(tmp_path / "bf16", stage)[victim],
                                   feature_matrix(tmp_path / "fp32", stage)[victim], rtol=0, atol=1e-5)
    assert reference.stages[1].fp32_recomputed == 0
