"""Progress inside a shard: a one-shard sample reports frames as its batches finish, not 0/1 until
the end (tiny real models on spawned CPU workers)."""

from __future__ import annotations

import json

from pathlib import Path


from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.stage import FeatureStage
from virnucpro.pipeline.work_queue import Progress


def test_one_shard_sample_reports_frames_while_its_shard_runs(
    golden_tiny_dir: Path, demo_models, tmp_path: Path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    # each batch takes >= 0.25 s, so the shard outlasts the parent's 1-s progress poll on any machine
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"batch_delay_s": 0.25}))
    sample = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path / "s.fa", 8)
    seen: list[Progress] = []
    config = cpu_config(sample, tmp_path / "out", demo_models, shard_frames=100_000, toks_per_batch=48,
                        persistent_models=True)
    result = run_prediction(config, on_progress=seen.append)
    assert len(result.prepared.shards) == 1
    esm = [p for p in seen if p.stage is FeatureStage.ESM]
    total = result.prepared.n_frames
    assert esm and all(p.frames_total == total and p.shards_total == 1 for p in esm)
    inside = [p for p in esm if p.shards_done == 0 and 0 < p.frames_done < total]
    assert inside, [(p.shards_done, p.frames_done) for p in esm]  # moved before the shard finished
    assert all(p.eta_seconds is not None for p in inside)
    assert [p.frames_done for p in esm] == sorted(p.frames_done for p in esm)  # never goes back
    assert esm[-1].frames_done == total and esm[-1].shards_done == 1 and esm[-1].fraction == 1.0
