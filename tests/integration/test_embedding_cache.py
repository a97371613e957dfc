"""The opt-in embedding cache across runs (``--embedding-cache``): rows embedded before by the same
model file, precision, device kind and software are read, not computed; anything else computes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.pipeline_helpers import captured_logs, cpu_config, feature_matrix, invoke_cli, model_args
from virnucpro.config import ModelPaths, RunConfig
from virnucpro.errors import ConfigError
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.prediction import PredictionResult, run_prediction

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")


def _records(source: Path, first: int, last: int) -> str:
    return "".join(">" + r for r in source.read_text().split(">")[1:][first:last])


@pytest.fixture(scope="module")
def samples(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cache_in")
    source = golden_tiny_dir / "shared_real.fa"
    paths = {"a": folder / "a.fa", "b": folder / "b.fa"}
    paths["a"].write_text(_records(source, 0, 6))
    paths["b"].write_text(_records(source, 3, 9))  # records 3-5 are a's too
    return paths


@pytest.fixture(scope="module")
def lease() -> Iterator[PoolLease]:
    """One resident CPU worker for the module's runs (each run borrows it: no worker start per run)."""
    with PoolLease.owned() as owned:
        yield owned


def run(config: RunConfig, lease: PoolLease) -> PredictionResult:
    return run_prediction(config, lease=lease.lend())


@pytest.fixture(scope="module")
def first_run(samples: dict[str, Path], demo_models, lease: PoolLease, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Sample a with an empty cache; the cache and the outputs."""
    root = tmp_path_factory.mktemp("cache_runs")
    cache = root / "cache"
    result = run(cpu_config(samples["a"], root / "a", demo_models, shard_frames=5, embedding_cache=cache), lease)
    return root, cache, result


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLES}


def _packs(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/packs/*.npz"))


def test_a_first_run_fills_the_cache_and_computes_everything(first_run) -> None:  # type: ignore[no-untyped-def]
    root, cache, result = first_run
    for stage in result.stages:
        assert stage.cache_hits == 0 and stage.cache_added == stage.frames - stage.duplicate_frames > 0
    assert {p.parent.parent.name.split("-")[0] for p in _packs(cache)} == {"dnabert", "esm"}
    info = json.loads((root / "a" / "run_info.json").read_text())
    assert [s["cache_added"] for s in info["stages"]] == [s.cache_added for s in result.stages]
    assert info["parameters"]["embedding_cache"] == str(cache)
    key = json.loads(next(cache.glob("esm-*/KEY.json")).read_text())
    assert key["precision"] == "fp32" and key["device"] == "cpu" and len(key["model_sha256"]) == 64


def test_the_same_sample_again_reads_every_row_and_writes_the_same_outputs(first_run, samples, demo_models, lease: PoolLease) -> None:  # type: ignore[no-untyped-def]
    root, cache, first = first_run
    again = run(cpu_config(samples["a"], root / "a_again", demo_models, shard_frames=5,
                                      embedding_cache=cache), lease)
    for stage, before in zip(again.stages, first.stages, strict=True):
        assert stage.cache_hits + stage.duplicate_frames == stage.frames == before.frames
        assert stage.tokens == 0 and stage.cache_added == 0  # nothing computed, nothing new
    assert _tables(root / "a_again") == _tables(root / "a")
    page = (root / "a_again" / "report.html").read_text()
    assert "<th>read from the embedding cache</th>" in page
    for stage in again.stages:  # the stage's row: frames ... duplicates, cache hits, fp32 re-runs
        assert (f'<td class="num">{stage.duplicate_frames:,}</td><td class="num">{stage.cache_hits:,}</td>'
                in page), stage.stage
    plain = root / "a_plain"
    run(cpu_config(samples["a"], plain, demo_models, shard_frames=5), lease)  # no cache at all
    assert _tables(plain) == _tables(root / "a")


def test_an_overlapping_sample_reads_the_shared_frames_and_computes_the_rest(first_run, samples, demo_models, lease: PoolLease) -> None:  # type: ignore[no-untyped-def]
    root, cache, _ = first_run
    packs_before = len(_packs(cache))
    out = root / "b"
    result = run(cpu_config(samples["b"], out, demo_models, shard_frames=5, embedding_cache=cache), lease)
    for stage in result.stages:
        assert 0 < stage.cache_hits < stage.frames and stage.cache_added > 0
    assert len(_packs(cache)) > packs_before
    fresh = root / "b_plain"
    run(cpu_config(samples["b"], fresh, demo_models, shard_frames=5), lease)
    for stage in ("dnabert", "esm"):
        cached, computed = feature_matrix(out, stage), feature_matrix(fresh, stage)
        assert cached.keys() == computed.keys()
        for frame_id, row in computed.items():  # equal to float32 rounding (other batch neighbours)
            np.testing.assert_allclose(cached[frame_id], row, rtol=0, atol=1e-6)


def test_another_model_file_does_not_reuse_the_cache(first_run, samples, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.models.demo import make_demo_models

    _, cache, _ = first_run
    other = make_demo_models(tmp_path / "models", seed=1)
    config = cpu_config(samples["a"], tmp_path / "out", demo_models, shard_frames=5, embedding_cache=cache,
                        persistent_models=True,
                        models=ModelPaths(dnabert=demo_models.dnabert, esm=other.esm,
                                          classifier=demo_models.classifier(500)))
    result = run_prediction(config)
    dnabert, esm = result.stages
    assert dnabert.cache_hits + dnabert.duplicate_frames == dnabert.frames  # same DNABERT-S file
    assert esm.cache_hits == 0 and esm.tokens > 0  # another ESM-2 file: another cache folder
    assert len(list(cache.glob("esm-*"))) == 2


def test_a_copied_model_file_is_recognised_by_its_sha256(first_run, samples, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, cache, _ = first_run
    esm_copy = tmp_path / "elsewhere" / demo_models.esm.name
    esm_copy.parent.mkdir()
    shutil.copy2(demo_models.esm, esm_copy)
    config = cpu_config(samples["a"], tmp_path / "out", demo_models, shard_frames=5, embedding_cache=cache,
                        persistent_models=True,
                        models=ModelPaths(dnabert=demo_models.dnabert, esm=esm_copy,
                                          classifier=demo_models.classifier(500)))
    esm = run_prediction(config).stages[1]
    assert esm.tokens == 0 and esm.cache_hits > 0


def test_a_corrupt_pack_is_left_out_and_its_rows_computed(samples, demo_models, lease: PoolLease, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    run(cpu_config(samples["a"], tmp_path / "first", demo_models, shard_frames=50, embedding_cache=cache), lease)
    esm_packs = sorted(cache.glob("esm-*/packs/*.npz"))
    assert len(esm_packs) == 1
    esm_packs[0].write_bytes(esm_packs[0].read_bytes()[:100])  # truncated
    with captured_logs() as lines:
        result = run(cpu_config(samples["a"], tmp_path / "second", demo_models, shard_frames=50,
                                           embedding_cache=cache), lease)
    assert any("computed again" in line and str(esm_packs[0]) in line for line in lines), lines
    dnabert, esm = result.stages
    assert dnabert.tokens == 0 and esm.cache_hits == 0 and esm.tokens > 0
    assert _tables(tmp_path / "second") == _tables(tmp_path / "first")


def test_a_cache_path_that_is_a_file_fails_before_any_work(samples, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    not_a_dir = tmp_path / "cache.txt"
    not_a_dir.write_text("mine\n")
    with pytest.raises(ConfigError, match="cache.txt is a file, not a directory"):
        run_prediction(cpu_config(samples["a"], tmp_path / "out", demo_models, embedding_cache=not_a_dir))
    assert not_a_dir.read_text() == "mine\n" and not (tmp_path / "out").exists()


def test_the_cli_option_fills_and_reads_the_cache(first_run, samples, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cli_cache"
    for name in ("one", "two"):
        run = invoke_cli(["predict", str(samples["a"]), "--output-dir", str(tmp_path / name), "--device", "cpu",
                          "--embedding-cache", str(cache), *model_args(demo_models)], tmp_path / name)
        assert run.exit_code == 0, run.output
    stages = [json.loads((tmp_path / n / "run_info.json").read_text())["stages"] for n in ("one", "two")]
    assert all(s["cache_added"] > 0 and s["cache_hits"] == 0 for s in stages[0])
    assert all(s["cache_hits"] > 0 and s["tokens"] == 0 for s in stages[1])
