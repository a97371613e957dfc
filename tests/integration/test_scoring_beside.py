"""The classifier scores each shard beside the ESM-2 stage, as soon as the shard's features are
complete; the classify step then scores only what is left. The outputs are those of a run that
scores every shard in the classify step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.pipeline import steps
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.pipeline.stages import ShardScorer

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("in") / "s.fa", 10)


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLES}


def test_shards_are_scored_beside_the_esm_stage_and_the_outputs_do_not_change(
    sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    import torch

    threads = torch.get_num_threads()
    seen: list[int] = []
    real = ShardScorer.score
    monkeypatch.setattr(ShardScorer, "score", lambda self, shard: (seen.append(torch.get_num_threads()),
                                                                   real(self, shard))[1])
    beside = run_prediction(cpu_config(sample, tmp_path / "beside", demo_models, shard_frames=6))
    assert set(seen) == {1} and torch.get_num_threads() == threads  # one thread beside; given back after
    monkeypatch.setattr(ShardScorer, "score", real)
    n_shards = len(beside.prepared.shards)
    assert n_shards > 2
    dnabert, esm = beside.stages
    assert dnabert.shards_scored == 0 and esm.shards_scored == n_shards
    assert beside.classify.shards_skipped == n_shards  # nothing left for the classify step
    info = json.loads((tmp_path / "beside" / "run_info.json").read_text())
    assert [s["shards_scored"] for s in info["stages"]] == [0, n_shards]

    monkeypatch.setattr(steps._ScoringBeside, "__call__", lambda self, shard: None)  # nothing scored beside
    after = run_prediction(cpu_config(sample, tmp_path / "after", demo_models, shard_frames=6))
    assert after.stages[-1].shards_scored == 0 and after.classify.shards_skipped == 0
    assert _tables(tmp_path / "beside") == _tables(tmp_path / "after")


def test_a_shard_that_fails_beside_the_stage_is_scored_by_the_classify_step(
    sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    real = ShardScorer.score
    failed: list[str] = []

    def first_fails(self: ShardScorer, shard) -> None:  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(shard.name)
            raise OSError(f"{shard.name}: injected read error")
        real(self, shard)

    monkeypatch.setattr(ShardScorer, "score", first_fails)
    result = run_prediction(cpu_config(sample, tmp_path / "out", demo_models, shard_frames=6))
    n_shards = len(result.prepared.shards)
    assert len(failed) == 1
    assert result.stages[-1].shards_scored == n_shards - 1
    assert result.classify.shards_skipped == n_shards - 1  # the failed shard was scored there
    monkeypatch.setattr(ShardScorer, "score", real)
    monkeypatch.setattr(steps._ScoringBeside, "__call__", lambda self, shard: None)
    reference = run_prediction(cpu_config(sample, tmp_path / "ref", demo_models, shard_frames=6))
    assert reference.classify.shards_skipped == 0
    assert _tables(tmp_path / "out") == _tables(tmp_path / "ref")


def test_shards_are_computed_and_scored_in_shard_order(
    sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # a duplicate's row comes from an earlier shard, so a shard computed before an earlier one
    # waits for it to be expanded and scored: in shard order each is scored as it is computed
    scored: list[str] = []
    real = ShardScorer.score
    monkeypatch.setattr(ShardScorer, "score", lambda self, shard: (scored.append(shard.name), real(self, shard))[1])
    result = run_prediction(cpu_config(sample, tmp_path / "out", demo_models, shard_frames=6))
    shards = list(result.prepared.shards)
    by_tokens = [s.name for s in sorted(shards, key=lambda s: -s.n_tokens)]
    assert by_tokens != [s.name for s in shards]  # largest first would be another order here
    assert scored == [s.name for s in shards]
