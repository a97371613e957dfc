"""Identical frames are computed once per run; the outputs are those of a run computing each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration.pipeline_helpers import cpu_config, feature_matrix
from virnucpro.pipeline import dedupe
from virnucpro.pipeline.prediction import run_prediction

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")


def duplicated_sample(source: Path, out: Path, n_records: int, n_copies: int) -> Path:
    """``n_records`` records, then ``n_copies`` of them again under new IDs (interleaved)."""
    records = [">" + r for r in source.read_text().split(">")[1:]][:n_records]
    copies = [">copy%d_%s" % (i, records[i % n_records][1:]) for i in range(n_copies)]
    mixed = [r for pair in zip(records, copies + [""] * n_records) for r in pair if r]
    out.write_text("".join(mixed))
    return out


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return duplicated_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("in") / "dup.fa", 7, 3)


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLES}


def assert_tables_match(one: Path, other: Path) -> None:
    """Same rows, IDs and calls; scores equal to float32 rounding. (A frame's embedding depends on
    its batch's padding in the last bit, and a run without the duplicates batches differently.)"""
    for name in TABLES:
        rows = [(out / name).read_text().splitlines() for out in (one, other)]
        assert len(rows[0]) == len(rows[1]), name
        for left, right in zip(*rows, strict=True):
            for a, b in zip(left.replace(",", "\t").split("\t"), right.replace(",", "\t").split("\t"), strict=True):
                try:
                    assert abs(float(a) - float(b)) <= 1e-6, (name, left, right)
                except ValueError:
                    assert a == b, (name, left, right)


@pytest.fixture(scope="module")
def deduped_run(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One run with duplicates computed once (the default), only read by the tests: (result, its
    output dir)."""
    out = tmp_path_factory.mktemp("dedupe") / "on"
    return run_prediction(cpu_config(sample, out, demo_models, shard_frames=7, persistent_models=True)), out


def test_duplicates_are_computed_once_and_outputs_are_unchanged(sample: Path, demo_models, deduped_run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    deduped, on_dir = deduped_run
    monkeypatch.setattr(dedupe, "DEDUPE", False)
    every = run_prediction(cpu_config(sample, tmp_path / "off", demo_models, shard_frames=7, persistent_models=True))
    assert_tables_match(on_dir, tmp_path / "off")
    for stage in ("dnabert", "esm"):
        on, off = feature_matrix(on_dir, stage), feature_matrix(tmp_path / "off", stage)
        assert on.keys() == off.keys()
        for frame_id, row in off.items():
            np.testing.assert_allclose(on[frame_id], row, rtol=0, atol=1e-6)
        for frame_id in sorted(on):  # a copy's row is its original's, bit for bit
            if frame_id.startswith("copy"):
                original = frame_id.split("_", 1)[1]
                assert np.array_equal(on[frame_id], on[original]), (stage, frame_id)
    assert not (on_dir / ".virnucpro_work" / "features" / "esm" / "unique").exists()
    for on_stage, off_stage in zip(deduped.stages, every.stages, strict=True):
        assert off_stage.duplicate_frames == 0
        assert on_stage.duplicate_frames > 0 and on_stage.frames == off_stage.frames
        assert on_stage.tokens < off_stage.tokens  # the duplicates' tokens were never computed
    info = json.loads((on_dir / "run_info.json").read_text())
    assert [s["duplicate_frames"] for s in info["stages"]] == [s.duplicate_frames for s in deduped.stages]


def test_a_run_stopped_before_expanding_resumes_without_recomputing(sample: Path, demo_models, deduped_run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = cpu_config(sample, tmp_path / "out", demo_models, shard_frames=7, persistent_models=True)

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt  # as a kill between the unique embeddings and the expansion

    with monkeypatch.context() as patch:
        patch.setattr(dedupe, "expand", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_prediction(config)
    resumed = run_prediction(config)
    assert resumed.stages[0].tokens == 0  # DNABERT-S: every unique embedding was on disk
    assert resumed.stages[0].duplicate_frames > 0
    _, fresh = deduped_run  # a fresh run of the same config, never stopped
    assert _tables(tmp_path / "out") == _tables(fresh)
