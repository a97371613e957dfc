"""Result tables: exact original formats, the per-sequence table, readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from virnucpro.domain.calls import ChunkCall, SequenceCall, SequenceCallLabel
from virnucpro.domain.records import FrameScore
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.domain.tables import (
    REGION_COLUMNS,
    SEQUENCE_COLUMNS,
    format_score,
    iter_prediction_results,
    read_highest_score,
    read_prediction_results,
    read_regions,
    read_sequence_calls,
    write_highest_score,
    write_prediction_results,
    write_regions,
    write_sequence_calls,
)
from virnucpro.errors import OutputError


def test_format_score_is_str_of_float32() -> None:
    assert format_score(0.12100612) == "0.12100612"
    assert format_score(float(np.float32(0.8789939))) == "0.8789939"
    assert format_score(np.float32(1e-6)) == "1e-06"
    assert format_score(1.0) == "1.0"


def test_prediction_results_format(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results.txt"
    scores = [
        FrameScore("s_chunk_1R1", float(np.float32(0.12100612)), float(np.float32(0.8789939))),
        FrameScore("s_chunk_1R2", 0.5, 0.5),
        FrameScore("t_chunk_1F1", float(np.float32(0.5501341)), float(np.float32(0.4498659))),
    ]
    assert write_prediction_results(path, scores) == 3
    assert path.read_text() == (
        "Sequence_ID\tPrediction\tscore1\tscore2\n"
        "s_chunk_1R1\tvirus\t0.12100612\t0.8789939\n"
        "s_chunk_1R2\tothers\t0.5\t0.5\n"
        "t_chunk_1F1\tothers\t0.5501341\t0.4498659\n"
    )
    assert read_prediction_results(path) == scores


def test_prediction_results_round_trip_is_exact_for_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    virus = rng.random(500, dtype=np.float32)
    scores = [FrameScore(f"r_chunk_{i}F1", float(1 - v), float(v)) for i, v in enumerate(virus)]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    write_prediction_results(first, scores)
    write_prediction_results(second, read_prediction_results(first))
    assert first.read_bytes() == second.read_bytes()
    assert [s.score_virus for s in read_prediction_results(first)] == [float(v) for v in virus]


def test_prediction_results_of_some_chunks_only(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results.txt"
    scores = [FrameScore(f"{r}_chunk_{k}{frame}", 0.25, 0.75)
              for r in ("a", "b") for k in (1, 2) for frame in ("F1", "R3")]
    write_prediction_results(path, scores)
    chosen = list(iter_prediction_results(path, {"a_chunk_2", "b_chunk_1", "c_chunk_1"}))
    assert [s.frame_id for s in chosen] == ["a_chunk_2F1", "a_chunk_2R3", "b_chunk_1F1", "b_chunk_1R3"]
    assert chosen == [s for s in scores if s.frame_id[:-2] in ("a_chunk_2", "b_chunk_1")]
    assert list(iter_prediction_results(path, set())) == []


def test_a_bad_row_is_an_error_also_outside_the_chunks_read(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results.txt"
    path.write_text("Sequence_ID\tPrediction\tscore1\tscore2\n"
                    "a_chunk_1F1\tvirus\t0.1\t0.9\nb_chunk_1F1\tmaybe\t0.5\n")
    with pytest.raises(OutputError, match="line 3"):
        list(iter_prediction_results(path, {"a_chunk_1"}))


def test_highest_score_format(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results_highestscore.csv"
    calls = [ChunkCall("a_chunk_1", True, 0.9, 0.1, 2), ChunkCall("a_chunk_2", False, 0.1, 0.9, 1)]
    assert write_highest_score(path, calls) == 2
    assert path.read_text() == "Modified_ID\tIs_Virus\na_chunk_1\tTrue\na_chunk_2\tFalse\n"
    assert read_highest_score(path) == {"a_chunk_1": True, "a_chunk_2": False}


def _sequence_calls() -> list[SequenceCall]:
    return [
        SequenceCall(
            "v",
            1200,
            SequenceCallLabel.VIRUS,
            "2 of 3 scored chunks called virus",
            3,
            3,
            2,
            2 / 3,
            0.987654321,
            0.7123456789,
            "v_chunk_2R1",
            virus_score=0.6543219,
            calibrated_virus_score=0.81234567,
            fdr=0.0312345,
            description="Escherichia phage T4\tfragment 3",
        ),
        SequenceCall(
            "n", 2, SequenceCallLabel.NO_CALL, "too short (2 bp)", 1, 0, 0, None, None, None, None
        ),
    ]


def test_sequence_table_format(tmp_path: Path) -> None:
    path = tmp_path / "prediction_sequences.tsv"
    assert write_sequence_calls(path, _sequence_calls()) == 2
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(SEQUENCE_COLUMNS)
    assert lines[1].split("\t") == [
        "v",
        "1200",
        "virus",
        "0.666667",
        "3",
        "3",
        "2",
        "0.987654",
        "0.712346",
        "v_chunk_2R1",
        "2 of 3 scored chunks called virus",
        "0.654322",
        "0.812346",
        "0.0312345",
        "Escherichia phage T4 fragment 3",
    ]
    assert lines[2] == "n\t2\tno-call\tNA\t1\t0\t0\tNA\tNA\tNA\ttoo short (2 bp)\tNA\tNA\tNA\t"


def test_sequence_table_keeps_the_first_eleven_columns_in_place() -> None:
    assert SEQUENCE_COLUMNS[:11] == (
        "sequence_id", "length", "call", "virus_fraction", "n_chunks", "n_scored_chunks",
        "n_virus_chunks", "max_virus_score", "mean_chunk_virus_score", "best_frame_id", "reason",
    )
    assert SEQUENCE_COLUMNS[11:] == ("virus_score", "calibrated_virus_score", "fdr", "description")


def test_sequence_table_of_eleven_columns_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "prediction_sequences.tsv"
    path.write_text(
        "\t".join(SEQUENCE_COLUMNS[:11]) + "\n"
        "n\t2\tno-call\tNA\t1\t0\t0\tNA\tNA\tNA\ttoo short (2 bp)\n"
    )
    assert read_sequence_calls(path) == [_sequence_calls()[1]]


def test_sequence_table_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "prediction_sequences.tsv"
    write_sequence_calls(path, _sequence_calls())
    back = read_sequence_calls(path)
    assert back[1] == _sequence_calls()[1]
    assert back[0].virus_fraction == pytest.approx(2 / 3, rel=1e-5)
    assert back[0].call is SequenceCallLabel.VIRUS
    assert back[0].virus_score == pytest.approx(0.6543219, rel=1e-5)
    assert back[0].fdr == pytest.approx(0.0312345, rel=1e-5)
    assert back[0].description == "Escherichia phage T4 fragment 3"


def test_regions_table_format_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "prediction_regions.tsv"
    regions = [
        Region("v", 1, 1200, 3, 0.7123456789, 0.987654321, RegionKind.WHOLE),
        Region("b", 2401, 9000, 14, 0.8125, 0.96875, RegionKind.PROVIRUS),
    ]
    assert write_regions(path, regions) == 2
    assert path.read_text() == (
        "sequence_id\tstart\tend\tlength\tn_chunks\tmean_virus_score\tmax_virus_score\tkind\n"
        "v\t1\t1200\t1200\t3\t0.712346\t0.987654\twhole\n"
        "b\t2401\t9000\t6600\t14\t0.8125\t0.96875\tprovirus\n"
    )
    back = read_regions(path)
    assert back[1] == regions[1]
    assert back[0].mean_virus_score == pytest.approx(0.7123456789, rel=1e-5)
    assert tuple(REGION_COLUMNS) == tuple(path.read_text().splitlines()[0].split("\t"))


def test_empty_regions_table_has_the_header(tmp_path: Path) -> None:
    path = tmp_path / "prediction_regions.tsv"
    assert write_regions(path, []) == 0
    assert path.read_text() == "\t".join(REGION_COLUMNS) + "\n"
    assert read_regions(path) == []


def test_regions_reader_names_a_damaged_line(tmp_path: Path) -> None:
    path = tmp_path / "prediction_regions.tsv"
    header = "\t".join(REGION_COLUMNS) + "\n"
    path.write_text(header + "b\t10\t20\t11\t1\t0.5\t0.6\tprophage\n")
    with pytest.raises(OutputError, match=r"prediction_regions\.tsv: line 2 is malformed"):
        read_regions(path)
    path.write_text(header + "b\t10\t20\t12\t1\t0.5\t0.6\tprovirus\n")
    with pytest.raises(OutputError, match=r"line 2 is malformed \(length is not end - start \+ 1"):
        read_regions(path)


def test_reader_rejects_another_file(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results.txt"
    path.write_text("id\tscore\nx\t1\n")
    with pytest.raises(
        OutputError, match=r"prediction_results\.txt: line 1 is not the expected header.*Delete it"
    ):
        read_prediction_results(path)


def test_reader_names_a_damaged_line(tmp_path: Path) -> None:
    path = tmp_path / "prediction_results.txt"
    path.write_text(
        "Sequence_ID\tPrediction\tscore1\tscore2\na_chunk_1F1\tvirus\t0.1\t0.9\na_chunk_1F2\tvir"
    )
    with pytest.raises(OutputError, match="line 3 is malformed"):
        read_prediction_results(path)
    path.write_text("Sequence_ID\tPrediction\tscore1\tscore2\na_chunk_1F1\tvirus\tx\t0.9\n")
    with pytest.raises(OutputError, match=r"line 2 is malformed .*not numbers"):
        read_prediction_results(path)
