"""Every CLI command and flag, each with a test that shows its effect; bad input end to end.

Most tests compare against ``cli_standard_run`` (tests/integration/conftest.py): one
``python -m virnucpro.cli -v predict s.fa --shard-frames 8 --no-persistent-models`` run of the session.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.pipeline_helpers import (
    SAMPLE_RECORDS,
    SHARD_FRAMES,
    CliRun,
    copy_features,
    model_args,
    write_sample,
)
from virnucpro.cli import cli

torch = pytest.importorskip("torch")


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)


_model_args = model_args


@pytest.fixture(scope="module")
def baseline(cli_standard_run: CliRun) -> Path:
    return cli_standard_run.output_dir


def _info(out: Path) -> dict:
    return json.loads((out / "run_info.json").read_text())


def test_predict_writes_every_output_with_provenance(baseline: Path, sample: Path) -> None:
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv",
                 "prediction_sequences.tsv", "run_info.json", "report.html"):
        assert (baseline / name).stat().st_size > 0
    info = _info(baseline)
    assert info["input"]["sha256"] == __import__("hashlib").sha256(sample.read_bytes()).hexdigest()
    assert set(info["models"]) == {"dnabert", "esm", "classifier"}
    assert all(len(m["sha256"]) == 64 for m in info["models"].values())
    assert info["demo_models"] is True and "RANDOM" in info["warning"]
    assert info["devices"] == ["cpu"]
    assert info["precision"] == "fp32"
    assert "DEMO MODELS" in (baseline / "report.html").read_text()
    records = sum(1 for line in sample.read_text().splitlines() if line.startswith(">"))
    assert len((baseline / "prediction_sequences.tsv").read_text().splitlines()) == records + 1


def test_chunk_length_300(sample: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu",
                     "--chunk-length", "300", *_model_args(demo_models, 300))
    assert result.exit_code == 0, result.output
    assert _info(tmp_path)["input"]["chunks"] > _info(baseline)["input"]["chunks"]
    assert _info(tmp_path)["parameters"]["chunk_length"] == 300


def test_model_options_are_used_and_missing_ones_named(sample: Path, demo_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for var in ("VIRNUCPRO_MODELS_DIR", "VIRNUCPRO_DNABERT_MODEL", "VIRNUCPRO_ESM_MODEL", "VIRNUCPRO_CLASSIFIER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path / "o"), "--device", "cpu",
                     "--dnabert-model", str(demo_models.dnabert))
    assert result.exit_code == 3
    assert "esm2_t36_3B_UR50D.pt" in result.output and "--esm-model" in result.output
    assert not (tmp_path / "o" / "prediction_results.txt").exists()


def test_classifier_safetensors_gives_same_predictions(sample: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy_features(baseline, tmp_path)  # the same features; the classifier stage runs for real
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu",
                     "--shard-frames", "8", "--dnabert-model", str(demo_models.dnabert),
                     "--esm-model", str(demo_models.esm),
                     "--classifier", str(demo_models.classifiers_safetensors[500]))
    assert result.exit_code == 0, result.output
    assert _info(tmp_path)["stages"][1]["shards_skipped"] == _info(tmp_path)["stages"][1]["shards_total"]
    assert (tmp_path / "prediction_results.txt").read_bytes() == (baseline / "prediction_results.txt").read_bytes()
    assert _info(tmp_path)["models"]["classifier"]["file"].endswith(".safetensors")


def test_device_cuda_without_gpu_is_a_clear_error(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--device", "cuda", *_model_args(demo_models))
    assert result.exit_code == 2
    assert "no GPU is visible" in result.output and "--device cpu" in result.output


def test_gpus_without_gpu_is_a_clear_error(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--gpus", "0,1", *_model_args(demo_models))
    assert result.exit_code == 2 and "--gpus 0,1" in result.output
    bad = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--gpus", "zero", *_model_args(demo_models))
    assert bad.exit_code == 2 and "comma-separated" in bad.output


def test_precision_fp8_on_the_cpu_is_a_clear_error_before_any_work(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    result = _invoke("predict", str(sample), "--output-dir", str(out), "--device", "cpu", "--precision", "fp8",
                     *_model_args(demo_models))
    assert result.exit_code == 2
    assert "compute capability 8.9" in result.output and "--precision auto" in result.output
    assert not (out / "prediction_results.txt").exists() and not (out / ".virnucpro_work").exists()
    check = _invoke("validate-precision", str(sample), "--device", "cpu", "--precisions", "fp8",
                    *_model_args(demo_models))
    assert check.exit_code == 2 and "FP8 tensor cores" in check.output


def test_precision_bf16_is_applied(sample: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu",
                     "--precision", "bf16", "--shard-frames", "8", *_model_args(demo_models))
    assert result.exit_code == 0, result.output
    assert _info(tmp_path)["precision"] == "bf16"
    from tests.integration.pipeline_helpers import feature_matrix

    a, b = feature_matrix(baseline, "esm"), feature_matrix(tmp_path, "esm")
    diffs = [float(abs(a[k] - b[k]).max()) for k in a]
    assert max(diffs) > 0  # a different arithmetic really ran
    assert max(diffs) < 0.5  # and it still computes the same function


def test_toks_per_batch_changes_packing_not_results(sample: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = _invoke("predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu",
                     "--toks-per-batch", "1", "--shard-frames", "8", *_model_args(demo_models))
    assert result.exit_code == 0, result.output
    one_each = _info(tmp_path)["stages"][1]
    packed = _info(baseline)["stages"][1]
    assert one_each["padded_tokens"] == one_each["tokens"]  # one sequence per batch: no padding
    assert packed["padded_tokens"] > packed["tokens"]
    assert _info(tmp_path)["parameters"]["toks_per_batch"] == 1
    got = (tmp_path / "prediction_results.txt").read_text().splitlines()
    ref = (baseline / "prediction_results.txt").read_text().splitlines()
    assert [g.split("\t")[:2] for g in got] == [r.split("\t")[:2] for r in ref]


def test_shard_frames_sets_work_unit_size(baseline: Path) -> None:
    info = _info(baseline)
    assert info["input"]["shards"] == -(-info["input"]["frames"] // 8)


def test_resume_and_no_resume(sample: Path, demo_models, cli_standard_run: CliRun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the first run is the session's standard run (same input and flags), copied here
    args = ["predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu",
            "--shard-frames", str(SHARD_FRAMES), *_model_args(demo_models)]
    assert cli_standard_run.exit_code == 0
    __import__("shutil").copytree(cli_standard_run.output_dir, tmp_path, dirs_exist_ok=True)
    again = _info(tmp_path)
    assert again["stages"][0]["shards_skipped"] == 0  # the first run computed every shard
    assert _invoke(*args).exit_code == 0
    resumed = _info(tmp_path)
    assert resumed["stages"][0]["shards_skipped"] == resumed["stages"][0]["shards_total"]
    assert _invoke(*args, "--no-resume").exit_code == 0
    fresh = _info(tmp_path)
    assert fresh["stages"][0]["shards_skipped"] == 0
    assert again["input"] == fresh["input"]


def test_default_output_dir_is_named_after_input(sample: Path, demo_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Without --output-dir: <input name>_virnucpro next to the INPUT (as the flow does), not in
    the current directory."""
    import shutil

    source = tmp_path / "data" / "s.fa"
    source.parent.mkdir()
    shutil.copy(sample, source)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _invoke("predict", str(source), "--device", "cpu", *_model_args(demo_models))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "s_virnucpro" / "prediction_results.txt").exists()
    assert list(elsewhere.iterdir()) == []


def test_verbose_flag_logs_progress(cli_standard_run: CliRun) -> None:
    assert cli_standard_run.args[0] == "-v"
    assert cli_standard_run.exit_code == 0
    assert "tokens/s" in cli_standard_run.log  # the process's stderr, where -v logging goes


def test_gzip_input_gives_the_same_predictions(golden_tiny_dir: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gz = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path / "s.fa.gz", SAMPLE_RECORDS, gz=True)
    result = _invoke("predict", str(gz), "--output-dir", str(tmp_path / "o"), "--device", "cpu",
                     "--shard-frames", "8", *_model_args(demo_models))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "prediction_results.txt").read_bytes() == (baseline / "prediction_results.txt").read_bytes()


def test_prepare_command(golden_tiny_dir: Path, tmp_path: Path) -> None:
    result = _invoke("prepare", str(golden_tiny_dir / "shared_real.fa"), "--chunk-length", "500", "--output-dir", str(tmp_path))
    assert result.exit_code == 0
    for name in ("shared_real_chunked500.fa", "shared_real_identified_nucleotide.fa", "shared_real_identified_protein.faa"):
        ref = golden_tiny_dir / name.replace("shared_real", "ref_500")
        assert (tmp_path / name).read_bytes() == ref.read_bytes()


def test_models_check_prints_sha256(demo_models) -> None:  # type: ignore[no-untyped-def]
    result = _invoke("models", "check", "--json", *_model_args(demo_models))
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    import hashlib

    esm = next(r for r in rows if r["model"] == "esm")
    assert esm["sha256"] == hashlib.sha256(Path(demo_models.esm).read_bytes()).hexdigest()
    quick = _invoke("models", "check", "--json", "--no-checksums", *_model_args(demo_models))
    assert all("sha256" not in json.loads(line) or json.loads(line)["sha256"] is None for line in quick.stdout.splitlines())
    table = _invoke("models", "check", *_model_args(demo_models)).stdout
    assert esm["sha256"] in table and "sha256" not in _invoke("models", "check", "--no-checksums", *_model_args(demo_models)).stdout


def test_models_convert_classifier(demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.models.reference.classifier import load_classifier

    target = tmp_path / "c.safetensors"
    assert _invoke("models", "convert-classifier", str(demo_models.classifier(500)), str(target)).exit_code == 0
    x = torch.randn(5, load_classifier(target).input_dim)
    a, b = load_classifier(target), load_classifier(demo_models.classifier(500))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_models_make_demo(tmp_path: Path) -> None:
    result = _invoke("models", "make-demo", str(tmp_path / "d"))
    assert result.exit_code == 0 and "random weights" in result.output
    assert (tmp_path / "d" / "DEMO_MODELS.json").exists()


# -- bad input: clear error naming file/record/fix, exit 2, nothing that looks complete -------
def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "empty": ("empty.fa", b"", "empty"),
    "not_fasta": ("reads.fq", b"@r1\nACGT\n+\nIIII\n", "FASTQ"),
    "protein": ("prot.fa", b">p1\nMKVLAAGIVGLLLAQPAMAHHHHHHEEKLLQRSTWY\n", "protein"),
    "duplicate": ("dup.fa", b">a\nACGTACGT\n>b\nACGT\n>a\nACGT\n>a\nAC\n", "appears 3 times"),
    "no_sequence": ("noseq.fa", b">a\n>b\nACGT\n", "'a'"),
    "odd_chars": ("odd.fa", b">a\nACGT12ACGT\n", "'1'"),
    "truncated_gz": ("cut.fa.gz", gzip.compress(b">a\n" + b"ACGT" * 5000)[:-30], "truncated or corrupt"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_cleanly(case: str, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name, data, expected = BAD_INPUTS[case]
    path = _bad(tmp_path, name, data)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "prediction_results.txt"  # an earlier run's output, listed in its manifest
    stale.write_text("stale result of an older run\n")
    (out / ".virnucpro_outputs.json").write_text(json.dumps(
        {"version": 1, "files": {stale.name: hashlib.sha256(stale.read_bytes()).hexdigest()}}))
    result = _invoke("predict", str(path), "--output-dir", str(out), "--device", "cpu", *_model_args(demo_models))
    assert result.exit_code == 2, result.output
    assert "InputError" in result.output and name in result.output and expected in result.output
    assert not (out / "prediction_results.txt").exists()  # no stale file posing as this run's
    assert not (out / "run_info.json").exists()


def test_crlf_input_gives_the_same_predictions(golden_tiny_dir: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lf = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path / "s.fa", SAMPLE_RECORDS)
    crlf = tmp_path / "crlf" / "s.fa"
    crlf.parent.mkdir()
    crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
    result = _invoke("predict", str(crlf), "--output-dir", str(tmp_path / "o"), "--device", "cpu",
                     "--shard-frames", "8", *_model_args(demo_models))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "prediction_results.txt").read_bytes() == (baseline / "prediction_results.txt").read_bytes()


def test_second_run_into_a_busy_output_dir_is_refused(sample: Path, demo_models, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.pipeline.output_lock import output_lock

    copy_features(baseline, tmp_path)  # the run after the holder resumes: no workers to start
    args = ["predict", str(sample), "--output-dir", str(tmp_path), "--device", "cpu", "--shard-frames", "8"]
    with output_lock(tmp_path):  # another run holds the directory
        result = _invoke(*args, *_model_args(demo_models))
    assert result.exit_code == 5
    assert "another VirNucPro run" in result.output and f"pid {__import__('os').getpid()}" in result.output
    assert not (tmp_path / "prediction_results.txt").exists()
    after = _invoke(*args, *_model_args(demo_models))
    assert after.exit_code == 0, after.output  # released when the holder is done
    assert (tmp_path / "prediction_results.txt").read_bytes() == (baseline / "prediction_results.txt").read_bytes()
