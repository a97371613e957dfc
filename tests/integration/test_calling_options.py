"""The calling options of ``virnucpro predict`` end to end, each with the effect users see:
presets and thresholds change the per-sequence calls (and only them: the original's two tables
stay byte-identical), the region options change ``prediction_regions.tsv`` and ``provirus.fna``,
and ``virnucpro calibrate`` + ``--calibration`` add the calibrated columns. One demo run
(``demo_run``), re-run with other options into copies (only the report step runs again)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.conftest import HOSTILE_DESCRIPTION, HOSTILE_ID, DemoRun
from virnucpro.cli import cli
from virnucpro.domain.calibration import read_calibration
from virnucpro.domain.calls import SequenceCallLabel, call_chunk_frames, call_track
from virnucpro.domain.fasta import read_fasta
from virnucpro.domain.regions import RegionKind, RegionOptions, find_regions
from virnucpro.domain.tables import (
    iter_prediction_results,
    read_highest_score,
    read_regions,
    read_sequence_calls,
)
from virnucpro.domain.thresholds import resolve_thresholds
from virnucpro.pipeline.tracks import RecordRow, iter_tracks

pytest.importorskip("torch")

ORIGINAL_TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv")


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)


def _calls(out: Path) -> dict[str, SequenceCallLabel]:
    return {c.record_id: c.call for c in read_sequence_calls(out / "prediction_sequences.tsv")}


def _n_virus(out: Path) -> int:
    return Counter(_calls(out).values())[SequenceCallLabel.VIRUS]


def _info(out: Path) -> dict:
    return json.loads((out / "run_info.json").read_text())


def _provirus(out: Path) -> list[tuple[str, int, int]]:
    return [(r.sequence_id, r.start, r.end) for r in read_regions(out / "prediction_regions.tsv")
            if r.kind is RegionKind.PROVIRUS]


def _expected_regions(out: Path, preset: str, options: RegionOptions) -> list[tuple[str, int, int]]:
    """The regions the domain rule finds on the tracks rebuilt from the written tables."""
    calls = read_sequence_calls(out / "prediction_sequences.tsv")
    chunks = call_chunk_frames(iter_prediction_results(out / "prediction_results.txt"))
    thresholds = resolve_thresholds(preset)
    tracks = iter_tracks([RecordRow(c.record_id, c.length, c.n_chunks) for c in calls], chunks, 500)
    return [(r.sequence_id, r.start, r.end) for t in tracks
            for r in find_regions(t, call_track(t, thresholds), thresholds, options)
            if r.kind is RegionKind.PROVIRUS]


@pytest.fixture(scope="module")
def conservative(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_run.variant(tmp_path_factory.mktemp("conservative"), "--preset", "conservative")


@pytest.fixture(scope="module")
def all_regions(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conservative calls (non-virus sequences with viral chunks) and every region kept."""
    return demo_run.variant(tmp_path_factory.mktemp("all_regions"), "--preset", "conservative",
                            "--min-region-length", "0")


# -- the default: today's calls ---------------------------------------------------------------
def test_default_calls_are_the_original_chunk_calls_by_majority(demo_run: DemoRun) -> None:
    out = demo_run.output_dir
    chunks = read_highest_score(out / "prediction_results_highestscore.csv")
    calls = read_sequence_calls(out / "prediction_sequences.tsv")
    assert len(calls) == 25
    for call in calls:
        mine = [v for chunk, v in chunks.items() if chunk.rsplit("_chunk_", 1)[0] == call.record_id]
        assert (call.n_scored_chunks, call.n_virus_chunks) == (len(mine), sum(mine)), call.record_id
        if mine:
            assert (call.call is SequenceCallLabel.VIRUS) == (sum(mine) / len(mine) >= 0.5)
            assert call.virus_score is not None and 0 <= call.virus_score <= 1
    descriptions = {r.id: r.description for r in read_fasta(demo_run.input_fasta)}
    assert {c.record_id: c.description for c in calls} == descriptions
    assert descriptions[HOSTILE_ID] == HOSTILE_DESCRIPTION
    info = _info(out)
    assert info["thresholds"]["preset"] == "default" and info["thresholds"]["min_score"] is None
    assert info["regions"] == {"smooth_window": 1, "smoothing": "median", "max_gap": 1, "min_length": 1000}
    assert info["calibration"] is None


def test_preset_default_spelled_out_changes_nothing(demo_run: DemoRun, tmp_path: Path) -> None:
    out = demo_run.variant(tmp_path, "--preset", "default")
    for name in (*ORIGINAL_TABLES, "prediction_sequences.tsv", "prediction_regions.tsv", "virus.fna"):
        assert (out / name).read_bytes() == (demo_run.output_dir / name).read_bytes(), name


def test_virus_fna_holds_the_virus_calls_under_their_headers(demo_run: DemoRun) -> None:
    out = demo_run.output_dir
    virus = [c for c, label in _calls(out).items() if label is SequenceCallLabel.VIRUS]
    records = {r.id: r for r in read_fasta(demo_run.input_fasta)}
    written = list(read_fasta(out / "virus.fna"))
    assert [r.id for r in written] == virus  # input order
    for record in written:
        assert record.sequence == records[record.id].sequence
        assert record.description == records[record.id].description
    whole = [r.sequence_id for r in read_regions(out / "prediction_regions.tsv")]
    assert whole == virus  # a sequence called virus is one whole region
    assert _info(out)["report"]["n_virus_fasta"] == len(virus)


# -- presets and thresholds --------------------------------------------------------------------
def test_presets_order_the_calls_and_leave_the_original_tables(
    demo_run: DemoRun, conservative: Path, tmp_path: Path
) -> None:
    relaxed = demo_run.variant(tmp_path, "--preset", "relaxed")
    default = demo_run.output_dir
    assert _n_virus(conservative) < _n_virus(default) <= _n_virus(relaxed)
    for surer, looser in ((conservative, default), (default, relaxed)):  # nested
        assert {r for r, c in _calls(surer).items() if c is SequenceCallLabel.VIRUS} <= {
            r for r, c in _calls(looser).items() if c is SequenceCallLabel.VIRUS}
    for out in (conservative, relaxed):
        for name in ORIGINAL_TABLES:
            assert (out / name).read_bytes() == (default / name).read_bytes(), name
    assert _info(conservative)["thresholds"]["min_score"] == 0.7
    assert _info(conservative)["parameters"]["preset"] == "conservative"


def test_min_score_and_min_virus_fraction_override_the_preset(demo_run: DemoRun, tmp_path: Path) -> None:
    everything = demo_run.variant(tmp_path / "a", "--min-score", "0")
    scored = [c for c in read_sequence_calls(everything / "prediction_sequences.tsv") if c.n_scored_chunks]
    assert scored and all(c.call is SequenceCallLabel.VIRUS for c in scored)
    unanimous = demo_run.variant(tmp_path / "b", "--preset", "relaxed", "--min-virus-fraction", "1")
    for call in read_sequence_calls(unanimous / "prediction_sequences.tsv"):
        if call.virus_fraction is not None:
            assert (call.call is SequenceCallLabel.VIRUS) == (call.virus_fraction == 1.0)
    thresholds = _info(unanimous)["thresholds"]
    assert (thresholds["preset"], thresholds["min_score"], thresholds["min_virus_fraction"]) == ("relaxed", 0.4, 1.0)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--min-score", "1.5", "must be a chunk score between 0 and 1"),
    ("--min-virus-fraction", "0", "must be above 0 and at most 1"),
    ("--smooth-window", "2", "must be an odd number of chunks"),
    ("--max-gap", "-1", "must be 0 or more unscored chunks"),
])
def test_a_bad_value_fails_at_once_naming_the_option(
    demo_run: DemoRun, tmp_path: Path, option: str, value: str, message: str
) -> None:
    result = _invoke(*demo_run.predict_args(tmp_path, option, value))
    assert result.exit_code == 2, result.output
    assert option in result.output and message in result.output
    assert not (tmp_path / "prediction_results.txt").exists()


# -- region options ----------------------------------------------------------------------------
def test_min_region_length_changes_the_regions_and_provirus_fna(
    demo_run: DemoRun, conservative: Path, all_regions: Path
) -> None:
    kept, every = _provirus(conservative), _provirus(all_regions)
    assert len(every) > len(kept)
    assert all(end - start + 1 >= 1000 for _, start, end in kept)
    assert any(end - start + 1 < 1000 for _, start, end in every)
    records = {r.id: r for r in read_fasta(demo_run.input_fasta)}
    written = list(read_fasta(all_regions / "provirus.fna"))
    assert [r.id for r in written] == [f"{rid}|provirus_{s}_{e}" for rid, s, e in every]
    for record, (rid, start, end) in zip(written, every):
        assert record.sequence == records[rid].sequence[start - 1 : end]
    info = _info(all_regions)
    assert info["regions"]["min_length"] == 0
    assert info["report"]["regions"]["provirus"] == info["report"]["n_provirus_fasta"] == len(every)


def test_smooth_window_and_max_gap_reach_the_region_rule(
    demo_run: DemoRun, all_regions: Path, tmp_path: Path
) -> None:
    smoothed = demo_run.variant(tmp_path / "s", "--preset", "conservative", "--min-region-length", "0",
                                "--smooth-window", "3")
    assert _provirus(smoothed) == _expected_regions(
        smoothed, "conservative", RegionOptions(smooth_window=3, min_length=0))
    assert _provirus(smoothed) != _provirus(all_regions)  # a lone viral chunk smoothed away
    assert _info(smoothed)["regions"]["smooth_window"] == 3
    no_gaps = demo_run.variant(tmp_path / "g", "--preset", "conservative", "--min-region-length", "0",
                               "--max-gap", "0")
    assert _provirus(no_gaps) == _expected_regions(
        no_gaps, "conservative", RegionOptions(max_gap=0, min_length=0))
    assert _info(no_gaps)["regions"]["max_gap"] == 0


# -- calibration -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labels(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic labels: the higher half of the virus scores labelled virus, two pairs swapped."""
    scored = sorted((c for c in read_sequence_calls(demo_run.output_dir / "prediction_sequences.tsv")
                     if c.virus_score is not None), key=lambda c: c.virus_score or 0.0)
    half = len(scored) // 2
    labels = {c.record_id: ("virus" if k >= half else "non-virus") for k, c in enumerate(scored)}
    for low, high in ((0, -1), (half - 1, half)):
        a, b = scored[low].record_id, scored[high].record_id
        labels[a], labels[b] = labels[b], labels[a]
    path = tmp_path_factory.mktemp("labels") / "labels.tsv"
    path.write_text("sequence_id\tlabel\n" + "".join(f"{k}\t{v}\n" for k, v in labels.items()))
    return path


def test_calibrate_writes_a_calibration_file(demo_run: DemoRun, labels: Path, tmp_path: Path) -> None:
    result = _invoke("calibrate", str(demo_run.output_dir), "--labels", str(labels), "--out",
                     str(tmp_path / "cal.json"))
    assert result.exit_code == 0, result.output
    assert "temperature" in result.output and "expected calibration error" in result.output
    calibration = read_calibration(tmp_path / "cal.json")
    assert calibration.chunk_length == 500 and calibration.n_sequences == 21
    assert (calibration.n_virus, calibration.n_non_virus) == (11, 10)
    assert calibration.nll_after <= calibration.nll_before + 1e-12  # what the fit minimises


def test_calibrate_names_unknown_sequences(demo_run: DemoRun, tmp_path: Path) -> None:
    labels = tmp_path / "labels.tsv"
    labels.write_text("not_in_the_run\tvirus\n")
    result = _invoke("calibrate", str(demo_run.output_dir), "--labels", str(labels))
    assert result.exit_code != 0
    assert "'not_in_the_run' (line 1)" in result.output and "not in the run" in result.output
    missing = _invoke("calibrate", str(tmp_path), "--labels", str(labels))
    assert missing.exit_code != 0 and "has no prediction_sequences.tsv" in missing.output


def test_predict_with_calibration_adds_calibrated_score_and_fdr(
    demo_run: DemoRun, labels: Path, tmp_path: Path
) -> None:
    fitted = tmp_path / "fit"
    fitted.mkdir()
    assert _invoke("calibrate", str(demo_run.output_dir), "--labels", str(labels), "--out",
                   str(fitted / "cal.json")).exit_code == 0
    calibration = read_calibration(fitted / "cal.json")
    out = demo_run.variant(tmp_path, "--calibration", str(fitted / "cal.json"))
    before = (demo_run.output_dir / "prediction_sequences.tsv").read_text().splitlines()
    after = (out / "prediction_sequences.tsv").read_text().splitlines()
    assert [r.split("\t")[:12] for r in after] == [r.split("\t")[:12] for r in before]  # same calls
    calls = read_sequence_calls(out / "prediction_sequences.tsv")
    virus = [c for c in calls if c.call is SequenceCallLabel.VIRUS]
    for call in calls:
        if call.virus_score is None:
            assert call.calibrated_virus_score is None and call.fdr is None
            continue
        assert call.calibrated_virus_score == pytest.approx(calibration.apply(call.virus_score), rel=1e-4)
        assert (call.fdr is not None) == (call.call is SequenceCallLabel.VIRUS)
    ranked = sorted(virus, key=lambda c: -(c.calibrated_virus_score or 0.0))
    assert [c.fdr for c in ranked] == sorted(c.fdr for c in ranked)  # non-decreasing down the list
    info = _info(out)
    assert info["calibration"]["temperature"] == pytest.approx(calibration.temperature)
    assert len(info["calibration"]["sha256"]) == 64
    assert info["report"]["n_calibrated"] == sum(c.virus_score is not None for c in calls)
    report = (out / "report.html").read_text()
    assert 'data-key="calibrated"' in report and 'data-key="fdr"' in report
    assert "calibrated P(virus)" in report  # the calibrated histogram
