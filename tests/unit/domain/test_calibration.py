"""Temperature scaling on synthetic labelled scores, the FDR column, labels, calibration files."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virnucpro.domain.calibration import (
    MIN_PER_CLASS,
    TEMPERATURE_BOUNDS,
    Calibration,
    LabelledSequence,
    calibrate_calls,
    expected_calibration_error,
    fdr_column,
    fit_calibration,
    fit_labelled_run,
    fit_temperature,
    log_loss,
    match_labels,
    read_calibration,
    read_labels,
    write_calibration,
)
from virnucpro.domain.calls import SequenceCall, SequenceCallLabel
from virnucpro.errors import InputError


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _synthetic(n: int, sharpen: float, seed: int = 7) -> tuple[list[float], list[bool]]:
    """Labels drawn from true probabilities; scores = those probabilities sharpened (>1) or not."""
    rng = random.Random(seed)
    truth = [min(0.999, max(0.001, rng.random())) for _ in range(n)]
    labels = [rng.random() < q for q in truth]
    return [_sigmoid(sharpen * _logit(q)) for q in truth], labels


# ----------------------------------------------------------------------------------- fitting
def test_over_confident_scores_are_softened_and_the_error_drops() -> None:
    scores, labels = _synthetic(4000, sharpen=3.0)
    calibration = fit_calibration(scores, labels, fitted_on="synthetic", chunk_length=500)
    assert calibration.temperature == pytest.approx(3.0, rel=0.15)
    assert calibration.ece_before > 0.1
    assert calibration.ece_after < calibration.ece_before / 3
    assert calibration.nll_after < calibration.nll_before
    assert (calibration.n_sequences, calibration.n_virus + calibration.n_non_virus) == (4000, 4000)
    assert calibration.n_virus == sum(labels)
    calibrated = [calibration.apply(s) for s in scores]
    assert expected_calibration_error(calibrated, labels) == pytest.approx(calibration.ece_after)


def test_under_confident_scores_are_sharpened() -> None:
    scores, labels = _synthetic(4000, sharpen=0.5, seed=3)
    calibration = fit_calibration(scores, labels)
    assert calibration.temperature == pytest.approx(0.5, rel=0.15)
    assert calibration.ece_after < calibration.ece_before


def test_calibrated_scores_stay_near_temperature_one() -> None:
    scores, labels = _synthetic(4000, sharpen=1.0, seed=11)
    assert fit_temperature(scores, labels) == pytest.approx(1.0, abs=0.15)


def test_temperature_minimises_the_nll() -> None:
    scores, labels = _synthetic(500, sharpen=2.0, seed=5)
    best = fit_temperature(scores, labels)

    def nll(t: float) -> float:
        clipped = [min(1 - 1e-6, max(1e-6, s)) for s in scores]
        return log_loss([_sigmoid(_logit(s) / t) for s in clipped], labels)

    assert nll(best) <= min(nll(best * 0.98), nll(best * 1.02))


def test_separated_labels_hit_the_lower_temperature_bound() -> None:
    scores = [0.2, 0.3, 0.4, 0.6, 0.7, 0.8]
    labels = [False, False, False, True, True, True]
    assert fit_temperature(scores, labels) == TEMPERATURE_BOUNDS[0]


def test_scores_of_zero_and_one_are_clipped() -> None:
    calibration = fit_calibration([0.0, 1.0, 0.0, 1.0, 0.5], [False, True, True, False, True])
    assert math.isfinite(calibration.nll_before) and math.isfinite(calibration.temperature)
    assert 0.0 < calibration.apply(0.0) < calibration.apply(1.0) < 1.0


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.05, 20))
def test_temperature_keeps_order_and_the_half(a: float, b: float, t: float) -> None:
    calibration = dataclasses.replace(_calibration(), temperature=t)
    if a <= b:
        assert calibration.apply(a) <= calibration.apply(b)
    assert calibration.apply(0.5) == 0.5


def test_expected_calibration_error_by_hand() -> None:
    assert expected_calibration_error([0.05, 0.15, 0.95], [False, False, True]) == pytest.approx(
        (0.05 + 0.15 + 0.05) / 3
    )
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0  # 1.0 is in the last bin
    assert expected_calibration_error([0.25, 0.75], [False, True], bins=2) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------- FDR
def test_fdr_is_the_running_mean_of_one_minus_p_in_the_given_order() -> None:
    assert fdr_column([0.9, 0.99, 0.5]) == pytest.approx([0.11 / 2, 0.01, 0.61 / 3])
    assert fdr_column([]) == []


def test_tied_scores_share_the_fdr_at_the_end_of_their_tie() -> None:
    assert fdr_column([0.8, 0.9, 0.8]) == pytest.approx([0.5 / 3, 0.1, 0.5 / 3])


@given(st.lists(st.floats(0, 1), max_size=60))
def test_fdr_is_monotone_along_the_score_order(scores: list[float]) -> None:
    fdr = fdr_column(scores)
    ordered = [fdr[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])]
    assert all(a <= b + 1e-12 for a, b in zip(ordered, ordered[1:]))
    assert all(0.0 <= value <= 1.0 for value in fdr)


def _call(record_id: str, label: SequenceCallLabel, score: float | None) -> SequenceCall:
    return SequenceCall(
        record_id, 600, label, "", 2, 2, 1, 0.5, score, score, None, virus_score=score
    )


def test_calibrate_calls_fills_the_calibrated_score_and_the_fdr_of_virus_calls() -> None:
    calibration = dataclasses.replace(_calibration(), temperature=2.0)
    calls = [
        _call("a", SequenceCallLabel.VIRUS, 0.9),
        _call("b", SequenceCallLabel.NON_VIRUS, 0.3),
        _call("c", SequenceCallLabel.NO_CALL, None),
        _call("d", SequenceCallLabel.VIRUS, 0.99),
    ]
    out = calibrate_calls(calls, calibration)
    cal_a, cal_d = calibration.apply(0.9), calibration.apply(0.99)
    assert [c.calibrated_virus_score for c in out] == [
        cal_a, calibration.apply(0.3), None, cal_d
    ]
    assert out[0].fdr == pytest.approx(((1 - cal_a) + (1 - cal_d)) / 2)
    assert out[3].fdr == pytest.approx(1 - cal_d)
    assert out[1].fdr is None and out[2].fdr is None
    assert [c.record_id for c in out] == ["a", "b", "c", "d"]


# ------------------------------------------------------------------------------------- labels
def test_read_labels_accepts_the_label_spellings_a_header_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text(
        "sequence_id\tlabel\n# from the benchmark\nphage_1\tvirus\nE_coli_3\tnon-virus\n\n"
        "p2\t1\nb2\t0\np3\tTRUE\nb3\tFalse\r\n"
    )
    assert read_labels(path) == [
        LabelledSequence("phage_1", True, 3),
        LabelledSequence("E_coli_3", False, 4),
        LabelledSequence("p2", True, 6),
        LabelledSequence("b2", False, 7),
        LabelledSequence("p3", True, 8),
        LabelledSequence("b3", False, 9),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tvirus\nb\tprophage\n", r"labels\.tsv: line 2: unknown label 'prophage' for 'b'; use "
         r"virus/non-virus, 1/0 or true/false"),
        ("a\tvirus\nb virus\n", r"line 2: expected 'sequence_id<TAB>label'"),
        ("a\tvirus\nb\tvirus\na\tnon-virus\n", r"line 3: 'a' is labelled again \(first at line 1"),
        ("# nothing\n\n", r"labels\.tsv: holds no label"),
    ],
)
def test_bad_labels_name_the_file_the_line_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_labels(path)


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"labels\.tsv: file not found"):
        read_labels(tmp_path / "labels.tsv")


def _labels(n_virus: int, n_non: int) -> list[LabelledSequence]:
    return [LabelledSequence(f"v{i}", True, i + 1) for i in range(n_virus)] + [
        LabelledSequence(f"n{i}", False, n_virus + i + 1) for i in range(n_non)
    ]


def test_match_labels_pairs_scores_and_skips_no_calls(caplog: pytest.LogCaptureFixture) -> None:
    labels = _labels(MIN_PER_CLASS, MIN_PER_CLASS + 1)
    scores: dict[str, float | None] = {l.sequence_id: 0.25 + 0.5 * l.is_virus for l in labels}
    scores["n0"] = None
    scores["unlabelled"] = 0.5
    got_scores, got_labels = match_labels(labels, scores, "labels.tsv")
    assert len(got_scores) == 2 * MIN_PER_CLASS
    assert got_scores[:2] == [0.75, 0.75] and got_labels.count(True) == MIN_PER_CLASS
    assert "1 labelled sequence(s) have no score" in caplog.text


def test_match_labels_rejects_ids_not_in_the_run() -> None:
    labels = _labels(12, 12)
    scores = {l.sequence_id: 0.5 for l in labels[2:]}
    with pytest.raises(
        InputError,
        match=r"labels\.tsv: 2 labelled sequence\(s\) are not in the run: 'v0' \(line 1\), 'v1' "
        r"\(line 2\)\. Label the sequences of this run",
    ):
        match_labels(labels, scores, "labels.tsv")


def test_match_labels_needs_enough_of_each_class() -> None:
    labels = _labels(3, 40)
    scores = {l.sequence_id: 0.5 for l in labels}
    with pytest.raises(
        InputError,
        match=r"3 virus and 40 non-virus labelled sequences have a score; calibration needs at "
        r"least 10 of each class",
    ):
        match_labels(labels, scores, "labels.tsv")


# -------------------------------------------------------------------------------------- files
def _calibration() -> Calibration:
    scores, labels = _synthetic(300, sharpen=2.0)
    return fit_calibration(scores, labels, fitted_on="labels.tsv on run out/", chunk_length=300)


def test_calibration_file_round_trip(tmp_path: Path) -> None:
    calibration = _calibration()
    path = tmp_path / "calibration.json"
    write_calibration(path, calibration)
    assert read_calibration(path) == calibration
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["score"] == "virus_score"
    assert data["fitted_on"] == "labels.tsv on run out/" and data["chunk_length"] == 300
    assert set(data) >= {"temperature", "n_sequences", "ece_before", "ece_after"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"cal\.json: is not JSON"),
        ('{"a": 1}', r"cal\.json: is not a VirNucPro calibration file"),
        ('{"temperature": 2.0, "version": 9}', r"calibration file version 9; this VirNucPro reads"),
        ('{"temperature": 2.0, "version": 1}', r"cal\.json: incomplete calibration file"),
    ],
)
def test_bad_calibration_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cal.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_calibration(path)


def test_edited_temperature_is_rejected(tmp_path: Path) -> None:
    data = json.loads(_calibration().to_json())
    data["temperature"] = -1.0
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"temperature -1\.0 is outside \[0\.05, 20\.0\]"):
        read_calibration(path)


def test_missing_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"calibration file not found.*virnucpro calibrate"):
        read_calibration(tmp_path / "none.json")


def test_fit_labelled_run_from_a_runs_calls(tmp_path: Path) -> None:
    scores, labels = _synthetic(200, sharpen=3.0, seed=2)
    calls = [
        _call(f"s{i}", SequenceCallLabel.VIRUS if s >= 0.5 else SequenceCallLabel.NON_VIRUS, s)
        for i, s in enumerate(scores)
    ]
    calls.append(_call("nocall", SequenceCallLabel.NO_CALL, None))
    path = tmp_path / "labels.tsv"
    path.write_text(
        "".join(f"s{i}\t{'virus' if y else 'non-virus'}\n" for i, y in enumerate(labels))
        + "nocall\tvirus\n"
    )
    calibration = fit_labelled_run(calls, path, chunk_length=500)
    assert calibration == fit_calibration(scores, labels, fitted_on=str(path), chunk_length=500)
    assert calibration.temperature > 1.5
