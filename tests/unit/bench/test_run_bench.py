"""bench/: its arithmetic, its sample, and whole runs on the CPU with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import measure, run_bench, sample


@pytest.fixture(scope="module")
def rb():  # type: ignore[no-untyped-def]
    """The benchmark's functions, wherever they live."""

    class Namespace:
        esm_flops = staticmethod(measure.esm_flops)
        dnabert_flops = staticmethod(measure.dnabert_flops)
        make_sample = staticmethod(sample.make_sample)
        frames_of = staticmethod(sample.frames_of)
        main = staticmethod(run_bench.main)

    return Namespace


def test_esm_flops_match_the_parameter_count(rb) -> None:  # type: ignore[no-untyped-def]
    # ESM-2 3B: 36 layers × 12·2560² linear weights = 2.83e9 -> 5.66 GFLOP per token, plus
    # attention 4·T·D per token per layer
    flops = rb.esm_flops([168], 36, 2560)
    linear = 2 * 36 * 12 * 2560**2 * 168
    attention = 36 * 4 * 2560 * 168**2
    assert flops == linear + attention
    assert 5.6e9 < flops / 168 < 5.8e9


def test_dnabert_flops(rb) -> None:  # type: ignore[no-untyped-def]
    per_token = 2 * 12 * (4 * 768**2 + 3 * 3072 * 768)  # 113M weights in the 12 layers
    assert rb.dnabert_flops([110], 12, 768, 3072) == per_token * 110 + 12 * 4 * 768 * 110**2


@pytest.mark.parametrize("drain", [False, True])
def test_run_embedder_rows_follow_the_input_in_both_modes(demo_dnabert_dir: Path, drain: bool) -> None:
    import torch

    from virnucpro.models.embedders import load_dnabert_embedder

    embedder = load_dnabert_embedder(demo_dnabert_dir, torch.device("cpu"))
    dna = ["ACGT" * n for n in (30, 3, 12, 25, 7, 18, 1)]  # shards reorder longest first
    out, stats = measure.run_embedder(embedder, dna, budget=64, shard_frames=3, drain_each_shard=drain)
    assert torch.allclose(torch.from_numpy(out), embedder.embed(dna), atol=1e-5)
    assert stats["sequences"] == len(dna) and stats["batches"] >= 3  # a batch never spans shards
    assert sum(stats["lengths"]) == stats["tokens"] == sum(embedder.token_lengths(dna))


def test_sample_is_real_mixed_and_deterministic(rb) -> None:  # type: ignore[no-untyped-def]
    a = rb.make_sample(300, seed=3)
    assert a == rb.make_sample(300, seed=3)
    assert a != rb.make_sample(300, seed=4)
    chunks = sum(-(-len(s) // 500) for _, s in a)
    assert 300 <= chunks < 300 + 7
    assert all(300 <= len(s) <= 3000 for _, s in a)
    kinds = {name.split("_")[0] for name, _ in a}
    assert kinds == {"viral", "bacterial"}
    frames = rb.frames_of(a, 500)
    lengths = [len(f.protein) for f in frames]
    assert max(set(lengths), key=lengths.count) == 166  # full 500-bp chunks dominate
    assert 0.2 < len(frames) / chunks < 3


def test_whole_run_on_cpu_with_tiny_models(rb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    rb.main([
        # the smallest samples that still run every section as on the GPU: 36 chunks are the
        # 10 fragments the duplicates part needs for its 30% (fewer and it takes more than 30%)
        "--out", str(out), "--device", "cpu", "--tiny", "--n-chunks", "36", "--small-chunks", "5",
        "--n-samples", "1", "--precision-frames", "12", "--baseline-frames", "8", "--esm-frames", "16",
        "--dnabert-repeat", "1", "--variant-divisor", "4", "--quick-baseline", "--time-limit", "600",
        "--golden-dir", str(tmp_path / "no-golden"), "--batch-samples", "2", "--batch-chunks", "5",
        "--process-runs", "2",
    ])
    result = json.loads((out / "bench.json").read_text())
    sections = result["sections"]
    assert all(v["status"] == "ok" for v in sections.values()), sections
    groups = {r["group"] for r in result["rows"]}
    assert {"esm", "dnabert", "precision", "baseline", "pipeline", "persistent", "pipeline-batch",
            "fast-default"} <= groups
    cold = next(r for r in result["rows"] if r["name"].startswith("pool start, cold"))
    (phases,) = cold["worker_start_phases_s"]
    assert {"process + imports", "esm read", "esm warm-up", "dnabert read", "dnabert warm-up"} <= set(phases)
    fp8_rows = [r for r in result["rows"] if r["group"] == "precision" and r["name"].startswith("fp8")]
    assert len(fp8_rows) == 3 and sum("--precision fp8" in r["name"] for r in fp8_rows) == 1  # the other accumulation
    assert sum("the other rounding" in r["name"] for r in fp8_rows) == 1  # and the other rounding
    for fp8 in fp8_rows:
        assert 0.9 < fp8["esm_cos_min"] <= 1.0 and 0.0 <= fp8["frame_label_agreement"] <= 1.0
    (fp8_rate,) = [r for r in result["rows"] if r["name"].startswith("ESM-2 stage alone: FP8")]
    assert "skipped" in fp8_rate["name"] or fp8_rate["vs_bf16_stage"] > 0
    fill, read = [r for r in result["rows"] if r["name"].startswith("pipeline, --embedding-cache")]
    assert fill["cache_added_esm"] > 0 and fill["cache_hits_esm"] == 0
    assert read["cache_hits_esm"] > 0 and read["cache_added_esm"] == 0
    (batch,) = [r for r in result["rows"] if r["group"] == "pipeline-batch"]
    assert batch["frames"] > 0 and len(batch["per_sample_s"]) == 2 and batch["vs_esm_alone"] > 0
    (process,) = [r for r in result["rows"] if r["name"].startswith("whole `virnucpro predict` process")]
    assert process["rc"] == 0 and len(process["walls_s"]) == 2  # --process-runs 2
    assert min(process["walls_s"]) <= process["wall_s"] <= max(process["walls_s"])
    pipeline = next(r for r in result["rows"] if r["group"] == "pipeline")
    assert pipeline["frames"] > 0 and pipeline["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}
    standard = [r for r in result["rows"] if r["name"].startswith("standard")][0]
    assert standard["model_loads"] == {"dnabert": 1, "esm": 1}  # a pool (and load) per stage
    md = (out / "bench.md").read_text()
    assert "| group | what |" in md and "tokens/s" in md
    assert not (out / "work").exists()  # scratch removed


def test_time_limit_skips_sections(rb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    rb.main(["--out", str(out), "--device", "cpu", "--tiny", "--n-chunks", "20", "--time-limit", "1",
             "--sections", "esm_alone,pipeline"])
    sections = json.loads((out / "bench.json").read_text())["sections"]
    assert sections["esm_alone"]["status"] == "skipped"
    assert sections["pipeline"]["status"] == "skipped"
