"""The domain layer against the ORIGINAL VirNucPro's files (``shared/golden``), byte for byte.

- ``prepare_files`` reproduces the original's chunk and identified files for every golden input;
- ``tables`` + ``calls`` reproduce ``prediction_results_highestscore.csv`` from the original's
  ``prediction_results.txt``, and re-write that file unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from virnucpro.domain.calls import call_chunks
from virnucpro.domain.fasta import read_fasta
from virnucpro.domain.prepare import prepare_files
from virnucpro.domain.tables import (
    read_prediction_results,
    write_highest_score,
    write_prediction_results,
)

@pytest.fixture(scope="module")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


@dataclass(frozen=True)
class PrepareCase:
    input: str
    chunk_length: int
    chunked: str
    nucleotide: str
    protein: str


def _broad(stem: str) -> PrepareCase:
    return PrepareCase(
        f"broad-vanilla/{stem}.fa",
        500,
        f"broad-vanilla/{stem}_chunked500.fa",
        f"broad-vanilla/{stem}_identified_nucleotide.fa",
        f"broad-vanilla/{stem}_identified_protein.faa",
    )


def _tiny(length: int) -> PrepareCase:
    return PrepareCase(
        "vanilla-tiny/shared_real.fa",
        length,
        f"vanilla-tiny/ref_{length}_chunked{length}.fa",
        f"vanilla-tiny/ref_{length}_identified_nucleotide.fa",
        f"vanilla-tiny/ref_{length}_identified_protein.faa",
    )


PREPARE_CASES = [_broad("test_with_orfs"), _broad("test_fixed_500bp"), _tiny(500), _tiny(300)]

TABLE_CASES = [
    (
        "broad-vanilla/ref_prediction_results.txt",
        "broad-vanilla/ref_prediction_results_highestscore.csv",
    ),
    (
        "vanilla-tiny/ref_500_prediction_results.txt",
        "vanilla-tiny/ref_500_prediction_results_highestscore.csv",
    ),
    (
        "vanilla-tiny/ref_300_prediction_results.txt",
        "vanilla-tiny/ref_300_prediction_results_highestscore.csv",
    ),
]


def _records(path: Path) -> list[tuple[str, str]]:
    return [(record.id, record.sequence) for record in read_fasta(path)]


def _assert_same_file(produced: Path, golden: Path) -> None:
    if produced.read_bytes() != golden.read_bytes():
        # Record by record first, for a readable failure; then the bytes (wrapping, newlines).
        assert _records(produced) == _records(golden), f"{produced.name} differs from {golden}"
        pytest.fail(f"{produced.name}: same records as {golden} but different bytes")


@pytest.mark.parametrize(
    "case", PREPARE_CASES, ids=lambda c: f"{Path(c.input).stem}-{c.chunk_length}"
)
def test_prepare_files_matches_the_original(
    case: PrepareCase, golden_dir: Path, tmp_path: Path
) -> None:
    produced = prepare_files(golden_dir / case.input, case.chunk_length, tmp_path)
    _assert_same_file(produced.chunked, golden_dir / case.chunked)
    _assert_same_file(produced.nucleotide, golden_dir / case.nucleotide)
    _assert_same_file(produced.protein, golden_dir / case.protein)


@pytest.mark.parametrize(("results", "highest"), TABLE_CASES, ids=lambda p: Path(p).name)
def test_highest_score_matches_the_original(
    results: str, highest: str, golden_dir: Path, tmp_path: Path
) -> None:
    scores = read_prediction_results(golden_dir / results)
    produced = tmp_path / "prediction_results_highestscore.csv"
    write_highest_score(produced, call_chunks(scores))
    golden = golden_dir / highest
    if produced.read_bytes() != golden.read_bytes():
        assert produced.read_text().splitlines() == golden.read_text().splitlines()
        pytest.fail(f"{produced.name}: same rows as {golden} but different bytes")


@pytest.mark.parametrize(("results", "highest"), TABLE_CASES, ids=lambda p: Path(p).name)
def test_prediction_results_rewrite_is_identical(
    results: str, highest: str, golden_dir: Path, tmp_path: Path
) -> None:
    produced = tmp_path / "prediction_results.txt"
    write_prediction_results(produced, read_prediction_results(golden_dir / results))
    assert produced.read_text().splitlines() == (golden_dir / results).read_text().splitlines()
    assert produced.read_bytes() == (golden_dir / results).read_bytes()


def test_prediction_rows_follow_the_identified_nucleotide_order(
    golden_dir: Path, tmp_path: Path
) -> None:
    prepared = prepare_files(golden_dir / "vanilla-tiny/shared_real.fa", 500, tmp_path)
    frame_ids = [record_id for record_id, _ in _records(prepared.nucleotide)]
    scores = read_prediction_results(golden_dir / "vanilla-tiny/ref_500_prediction_results.txt")
    assert [score.frame_id for score in scores] == frame_ids
