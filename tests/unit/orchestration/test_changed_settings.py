"""Which output-changing settings differ between a finished sample and tonight's parameters."""

from __future__ import annotations

import json
from pathlib import Path

from virnucpro.orchestration.changed_settings import OUTPUT_PARAMETERS, changed_settings
from virnucpro.pipeline.parameters import build_config
from virnucpro.pipeline.run_info import config_dict


def _finished(tmp_path: Path, **params: object) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    recorded = config_dict(build_config({"input_fasta": tmp_path / "s.fa", **params}))
    (out / "run_info.json").write_text(json.dumps({"parameters": recorded}))
    return out


def test_the_same_settings_change_nothing_and_speed_settings_do_not_count(tmp_path: Path) -> None:
    out = _finished(tmp_path, preset="conservative", esm_model="/m/esm.pt", device="cpu")
    tonight = {"preset": "conservative", "esm_model": "/m/esm.pt", "device": "cuda", "toks_per_batch": 8192,
               "persistent_models": True, "embedding_cache": "/cache"}
    assert changed_settings(out, tmp_path / "s.fa", tonight) == ()


def test_each_output_setting_is_named_when_it_differs(tmp_path: Path) -> None:
    out = _finished(tmp_path, preset="conservative", classifier="/m/500_model.pth", min_region_length=0)
    tonight = {"preset": "relaxed", "classifier": "/m/new_500_model.pth", "min_region_length": 0,
               "precision": "fp32"}
    assert changed_settings(out, tmp_path / "s.fa", tonight) == ("classifier", "precision", "preset")
    assert set(OUTPUT_PARAMETERS) >= {"classifier", "precision", "preset", "calibration", "chunk_length"}


def test_a_finished_sample_without_a_readable_run_info_counts_as_changed(tmp_path: Path) -> None:
    assert changed_settings(tmp_path, tmp_path / "s.fa", {}) == ("run_info.json",)
