"""Every output path from one object."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.domain.outputs import OutputPaths, PreparedFiles, input_stem


def test_output_paths(tmp_path: Path) -> None:
    paths = OutputPaths.for_dir(tmp_path)
    assert paths.prediction_results == tmp_path / "prediction_results.txt"
    assert paths.highest_score == tmp_path / "prediction_results_highestscore.csv"
    assert paths.sequences == tmp_path / "prediction_sequences.tsv"
    assert paths.regions == tmp_path / "prediction_regions.tsv"
    assert paths.virus_fasta == tmp_path / "virus.fna"
    assert paths.provirus_fasta == tmp_path / "provirus.fna"
    assert paths.calibration == tmp_path / "calibration.json"
    assert paths.run_info == tmp_path / "run_info.json"
    assert paths.report == tmp_path / "report.html"
    assert paths.work_dir == tmp_path / ".virnucpro_work"
    assert paths.dnabert_features_dir == tmp_path / ".virnucpro_work" / "features" / "dnabert"
    assert paths.esm_features_dir == tmp_path / ".virnucpro_work" / "features" / "esm"
    assert paths.feature_file("esm", "shard_000001") == (
        tmp_path / ".virnucpro_work" / "features" / "esm" / "shard_000001.npz"
    )
    assert paths.score_file("shard_000001") == tmp_path / ".virnucpro_work" / "scores" / "shard_000001.npz"
    assert paths.done_marker == tmp_path / ".virnucpro_work" / "DONE"
    assert len(set(paths.final_outputs)) == 8
    assert paths.calibration not in paths.final_outputs


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("sample.fa", "sample"),
        ("sample.fasta.gz", "sample"),
        ("my.sample.FNA", "my.sample"),
        ("x.fas", "x"),
        ("genes.ffn.gz", "genes"),
        ("reads.txt", "reads.txt"),
        ("test_with_orfs.fa", "test_with_orfs"),
    ],
)
def test_input_stem(name: str, stem: str) -> None:
    assert input_stem(Path("/data") / name) == stem


def test_prepared_paths(tmp_path: Path) -> None:
    prepared = OutputPaths.for_dir(tmp_path).prepared(Path("/in/sample.fasta.gz"), 300)
    assert prepared == PreparedFiles(
        chunked=tmp_path / "sample_chunked300.fa",
        nucleotide=tmp_path / "sample_identified_nucleotide.fa",
        protein=tmp_path / "sample_identified_protein.faa",
    )
