"""The classifier scores each shard beside the ESM-2 stage, as soon as the shard's features are
complete; the classify step then scores only what is left. The outputs are those of a run that
scores every shard in the classify step.

The default run and the classify-step run are made once (module fixtures) and only read."""

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


@pytest.fixture(scope="module")
def scored_beside(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One run as configured by default (shards scored beside the ESM-2 stage), read by the tests
    of the scoring beside and of its order: (result, output dir, (torch threads, shard name) of
    each ``ShardScorer.score`` call, torch threads before the run, torch threads after it)."""
    import torch

    threads = torch.get_num_threads()
    seen: list[tuple[int, str]] = []
    real = ShardScorer.score

    def recorded(self: ShardScorer, shard) -> None:  # type: ignore[no-untyped-def]
        seen.append((torch.get_num_threads(), shard.name))
        return real(self, shard)

    out = tmp_path_factory.mktemp("beside")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ShardScorer, "score", recorded)
        result = run_prediction(cpu_config(sample, out, demo_models, shard_frames=6))
    return result, out, seen, threads, torch.get_num_threads()


@pytest.fixture(scope="module")
def scored_in_classify_step(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The reference: the same run with nothing scored beside the stage (every shard scored by
    the classify step); (result, output dir)."""
    out = tmp_path_factory.mktemp("classify_step")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steps._ScoringBeside, "__call__", lambda self, shard: None)  # nothing scored beside
        result = run_prediction(cpu_config(sample, out, demo_models, shard_frames=6))
    return result, out


def test_shards_are_scored_beside_the_esm_stage_and_the_outputs_do_not_change(
    scored_beside, scored_in_classify_step  # type: ignore[no-untyped-def]
) -> None:
    beside, beside_out, seen, threads, threads_after = scored_beside
    assert seen and {t for t, _ in seen} == {1} and threads_after == threads  # one thread beside; given back after
    n_shards = len(beside.prepared.shards)
    assert n_shards > 2
    dnabert, esm = beside.stages
    assert dnabert.shards_scored == 0 and esm.shards_scored == n_shards
    assert beside.classify.shards_skipped == n_shards  # nothing left for the classify step
    info = json.loads((beside_out / "run_info.json").read_text())
    assert [s["shards_scored"] for s in info["stages"]] == [0, n_shards]

    after, after_out = scored_in_classify_step
    assert after.stages[-1].shards_scored == 0 and after.classify.shards_skipped == 0
    assert _tables(beside_out) == _tables(after_out)


def test_a_shard_that_fails_beside_the_stage_is_scored_by_the_classify_step(
    sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scored_in_classify_step  # type: ignore[no-untyped-def]
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
    reference, reference_out = scored_in_classify_step
    assert reference.classify.shards_skipped == 0
    assert _tables(tmp_path / "out") == _tables(reference_out)


def test_shards_are_computed_and_scored_in_shard_order(scored_beside) -> None:  # type: ignore[no-untyped-def]
    # a duplicate's row comes from an earlier shard, so a shard computed before an earlier one
    # waits for it to be expanded and scored: in shard order each is scored as it is computed
    result, _, seen, _, _ = scored_beside
    scored = [name for _, name in seen]
    shards = list(result.prepared.shards)
    by_tokens = [s.name for s in sorted(shards, key=lambda s: -s.n_tokens)]
    assert by_tokens != [s.name for s in shards]  # largest first would be another order here
    assert scored == [s.name for s in shards]
