"""The ``virnucpro-nightly`` flow against the package's real Prefect server, on the tiny demo models.

An inbox of 3 samples runs with ONE persistent pool for the night (each worker loads each model
once across all samples); a second night skips all of them; a renamed copy of a finished sample is
recognised by its content; a corrupt sample is reported and the others complete (the night ends
Failed); a crashed night resumes the half-done sample from its shards. Every sample of a night gets
the night's calling parameters; the night report (HTML) has a row and a report link per sample.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from virnucpro.orchestration.artifacts import NIGHTLY_ARTIFACT_KEY  # noqa: E402
from virnucpro.orchestration.batch import scan_inbox  # noqa: E402


@pytest.fixture(scope="module")
def records(golden_tiny_dir: Path) -> list[str]:
    return [">" + r for r in (golden_tiny_dir / "shared_real.fa").read_text().split(">")[1:]]


@pytest.fixture(scope="module")
def inbox(records: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three samples: plain .fa, .fasta, and gzip."""
    folder = tmp_path_factory.mktemp("inbox")
    (folder / "a.fa").write_text("".join(records[0:3]))
    (folder / "b.fasta").write_text("".join(records[3:6]))
    with gzip.open(folder / "c.fa.gz", "wt") as handle:
        handle.write("".join(records[6:9]))
    (folder / "notes.txt").write_text("not a sample\n")
    (folder / ".d.fa.partial").write_text("".join(records[9:10]))
    return folder


@pytest.fixture(scope="module")
def params(demo_models) -> dict:  # type: ignore[no-untyped-def]
    return {
        "dnabert_model": demo_models.dnabert,
        "esm_model": demo_models.esm,
        "classifier": demo_models.classifier(500),
        "device": "cpu",
    }


def _night(inbox: Path, outbox: Path, params: dict, **extra):  # type: ignore[no-untyped-def]
    from flows.nightly import nightly_flow

    state = nightly_flow(inbox=inbox, outbox=outbox, **params, **extra, return_state=True)
    run = str(state.state_details.flow_run_id)
    reports = sorted(outbox.glob(f"nightly-*-{run[:8]}.json"))  # one report per night run
    assert len(reports) == 1, reports
    return state, json.loads(reports[0].read_text())


def _by_name(report: dict) -> dict[str, dict]:
    return {Path(s["file"]).name: s for s in report["samples"]}


@pytest.fixture(scope="module")
def first_night(harness, inbox: Path, params: dict, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    outbox = tmp_path_factory.mktemp("outbox")
    cache = tmp_path_factory.mktemp("night_cache")
    state, report = _night(inbox, outbox, params, **NIGHT_CALLING, embedding_cache=cache)
    return state, report, outbox


NIGHT_CALLING = {"preset": "conservative", "min_region_length": 0}
"""The first night's calling parameters, which every sample of the night must get."""


def test_first_night_runs_every_sample_with_one_pool(first_night) -> None:  # type: ignore[no-untyped-def]
    state, report, outbox = first_night
    assert state.is_completed(), state.message
    samples = _by_name(report)
    assert sorted(samples) == ["a.fa", "b.fasta", "c.fa.gz"]
    assert report["mode"] == "persistent pool" and report["counts"]["done"] == 3
    # one pool for the night: each model loaded once by the one (CPU) worker, not once per sample
    assert report["pools_opened"] == 1
    assert report["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}
    for name, sample in samples.items():
        out = Path(sample["output_dir"])
        assert out.parent == outbox and out.name.endswith("-" + sample["sha256"][:12])
        assert (out / ".virnucpro_work" / "DONE").read_text().strip() == sample["sha256"]
        assert (out / "prediction_results.txt").is_file()
        info = json.loads((out / "run_info.json").read_text())
        for stage in info["stages"]:  # the pool's running totals, seen from every sample
            assert stage["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}, name
        assert sample["records"] == 3 and sum(sample["calls"].values()) == 3
    assert _by_name(report)["c.fa.gz"]["output_dir"].endswith(
        "/c-" + samples["c.fa.gz"]["sha256"][:12]
    )


def test_a_night_calls_every_sample_with_its_thresholds(first_night) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = first_night
    for sample in report["samples"]:
        info = json.loads((Path(sample["output_dir"]) / "run_info.json").read_text())
        assert info["thresholds"]["preset"] == NIGHT_CALLING["preset"]
        assert info["thresholds"]["min_score"] == 0.7
        assert info["regions"]["min_length"] == NIGHT_CALLING["min_region_length"]


def test_a_night_shares_its_embedding_cache_with_every_sample(first_night) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = first_night
    caches = set()
    for sample in report["samples"]:
        info = json.loads((Path(sample["output_dir"]) / "run_info.json").read_text())
        caches.add(info["parameters"]["embedding_cache"])
        assert all(s["cache_added"] + s["cache_hits"] > 0 for s in info["stages"]), sample["file"]
    (cache,) = caches
    assert {p.parent.parent.name.split("-")[0] for p in Path(cache).glob("*/packs/*.npz")} == {"dnabert", "esm"}


def test_first_night_writes_the_night_report(first_night) -> None:  # type: ignore[no-untyped-def]
    _, report, outbox = first_night
    (page,) = outbox.glob("nightly-*.html")
    (night_json,) = outbox.glob("nightly-*.json")
    assert page == night_json.with_suffix(".html")  # beside the night's JSON, under its name
    assert page.name.startswith(f"nightly-{report['date']}")
    text = page.read_text()
    for sample in report["samples"]:
        name = Path(sample["file"]).name
        assert f"<td>{name}</td>" in text
        assert f'<a href="{Path(sample["output_dir"]).name}/report.html">report.html</a>' in text
    assert "No earlier night in this outbox" in text  # the first night: no drift yet
    assert "DEMO MODELS WITH RANDOM WEIGHTS" in text


def test_first_night_publishes_the_summary_artifact(first_night) -> None:  # type: ignore[no-untyped-def]
    state, report, _ = first_night
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[NIGHTLY_ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
        ))
    assert len(artifacts) == 1 and artifacts[0].type == "markdown"
    text = artifacts[0].data
    assert "3 done, 0 failed, 0 missing, 0 already-done" in text
    assert "DEMO MODELS WITH RANDOM WEIGHTS" in text
    assert "cpu: dnabert 1, esm 1" in text
    for sample in report["samples"]:
        assert f"| {Path(sample['file']).name} | {sample['sha256'][:12]} | done |" in text


def test_second_night_skips_finished_samples(first_night, inbox: Path, params: dict) -> None:  # type: ignore[no-untyped-def]
    _, first, outbox = first_night
    state, report = _night(inbox, outbox, params)
    assert state.is_completed(), state.message
    assert report["counts"]["already-done"] == 3 and report["counts"]["done"] == 0
    assert report["pools_opened"] == 0 and report["model_loads"] == {}
    assert {s["output_dir"] for s in report["samples"]} == {s["output_dir"] for s in first["samples"]}
    assert len(list(outbox.glob("nightly-*.json"))) == 2  # the first night's report is still there
    # tonight's calling parameters are the defaults, not the first night's: said, not re-run
    assert all(s["settings_changed"] == ["preset", "min_region_length"] for s in report["samples"])
    page = (outbox / Path(report_name(report)).with_suffix(".html").name).read_text()
    assert "made with other settings: preset, min_region_length" in page


def _copy_of_first_outbox(first_night, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The first night's outbox copied (a test that changes it leaves the module's own alone)."""
    outbox = tmp_path / "outbox"
    shutil.copytree(first_night[2], outbox)
    return outbox


def test_a_night_with_rerun_changed_runs_samples_of_other_settings_again(
    first_night, inbox: Path, params: dict, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    outbox = _copy_of_first_outbox(first_night, tmp_path)
    same = _night(inbox, outbox, params, **NIGHT_CALLING)[1]  # the first night's settings again
    assert report_counts(same) == (0, 3) and all(s["settings_changed"] == [] for s in same["samples"])
    from flows.nightly import main  # python flows/nightly.py ... --rerun-changed (the flow's rerun_changed)

    before = set(outbox.glob("nightly-*.json"))
    argv = [str(inbox), str(outbox), "--device", "cpu", "--dnabert-model", str(params["dnabert_model"]),
            "--esm-model", str(params["esm_model"]), "--classifier", str(params["classifier"]),
            "--preset", "relaxed", "--min-region-length", str(NIGHT_CALLING["min_region_length"]),
            "--rerun-changed"]
    assert main(argv) == 0
    (new_report,) = set(outbox.glob("nightly-*.json")) - before
    report = json.loads(new_report.read_text())
    assert report_counts(report) == (3, 0)
    for sample in report["samples"]:
        info = json.loads((Path(sample["output_dir"]) / "run_info.json").read_text())
        assert info["thresholds"]["preset"] == "relaxed"
        for stage in info["stages"]:  # the embeddings were valid for the new thresholds: reused
            assert stage["shards_skipped"] == stage["shards_total"], sample["file"]
        assert (Path(sample["output_dir"]) / ".virnucpro_work" / "DONE").read_text().strip() == sample["sha256"]


def report_counts(report: dict) -> tuple[int, int]:
    return report["counts"]["done"], report["counts"]["already-done"]


def report_name(report: dict) -> str:
    run = report["flow_run_id"]
    return f"nightly-{report['date']}-{run[:8]}.json"


def test_renamed_copy_is_recognised_by_content(first_night, inbox: Path, params: dict, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, first, outbox = first_night
    renamed = tmp_path / "inbox"
    renamed.mkdir()
    shutil.copy(inbox / "a.fa", renamed / "sample_2024_renamed.fna")
    shutil.copy(inbox / "a.fa", renamed / "second_copy.fa")
    scan = scan_inbox(renamed, outbox)
    assert scan.pending == () and len(scan.finished) == 2
    assert {str(out) for _, out in scan.finished} == {_by_name(first)["a.fa"]["output_dir"]}


def test_corrupt_sample_is_reported_and_the_others_complete(
    harness, records: list[str], params: dict, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "good.fa").write_text("".join(records[10:12]))
    (inbox / "corrupt.fa").write_text(">x\nMKVLAAGIVGLLLAQWERTYIPASDFGHKLCVNM\n")
    (inbox / "z_good.fa").write_text("".join(records[12:14]))
    (inbox / "good_copy.fa").write_text("".join(records[10:12]))
    outbox = tmp_path / "outbox"
    state, report = _night(inbox, outbox, params)
    assert state.is_failed()
    assert "1 of 3 new sample(s) not finished" in state.message and "corrupt.fa (failed): InputError" in state.message
    samples = _by_name(report)
    assert samples["corrupt.fa"]["status"] == "failed"
    error = samples["corrupt.fa"]["error"]
    assert error.startswith("InputError: ") and "looks like protein" in error
    assert samples["good.fa"]["status"] == "done" and samples["z_good.fa"]["status"] == "done"
    assert samples["good_copy.fa"]["status"] == "duplicate"
    assert report["model_loads"] == {"cpu": {"dnabert": 1, "esm": 1}}


def test_crashed_night_resumes_without_redoing_finished_work(
    first_night, inbox: Path, params: dict, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = first_night[1]
    outbox = _copy_of_first_outbox(first_night, tmp_path)
    for report in outbox.glob("nightly-*.json"):
        report.unlink()
    crashed = outbox / Path(_by_name(first)["b.fasta"]["output_dir"]).name
    # a crash after both feature stages: features on disk, no scores, outputs or DONE marker
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv",
                 "prediction_sequences.tsv", "run_info.json", "report.html"):
        (crashed / name).unlink()
    (crashed / ".virnucpro_work" / "DONE").unlink()
    shutil.rmtree(crashed / ".virnucpro_work" / "scores")
    state, report = _night(inbox, outbox, params, persistent_models=False)
    assert state.is_completed(), state.message
    samples = _by_name(report)
    assert samples["b.fasta"]["status"] == "done"
    assert samples["a.fa"]["status"] == samples["c.fa.gz"]["status"] == "already-done"
    info = json.loads((crashed / "run_info.json").read_text())
    assert all(s["shards_skipped"] == s["shards_total"] for s in info["stages"])  # resumed, not recomputed
    # nothing left to embed, so no worker started: each stage reports the figures of the run that
    # computed it, marked resumed (pipeline.steps.feature_step)
    assert all(s["resumed"] for s in info["stages"])
    assert report["mode"] == "per-stage workers"
    original = Path(_by_name(first)["b.fasta"]["output_dir"])
    assert (crashed / "prediction_results.txt").read_bytes() == (original / "prediction_results.txt").read_bytes()
