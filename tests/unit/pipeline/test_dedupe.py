"""Identical model inputs are planned once per run, each stage keyed by its own model's input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.records import Chunk, Frame, Strand
from virnucpro.domain.translation import six_frames
from virnucpro.pipeline import dedupe
from virnucpro.pipeline.shards import features_complete, read_shard, save_features, write_shard
from virnucpro.pipeline.stage import FeatureStage


def _frame(chunk: str, dna: str, protein: str) -> Frame:
    return Frame(record_id=chunk, chunk_id=chunk, strand=Strand.FORWARD, offset=0, dna=dna, protein=protein)


def test_the_same_dna_can_translate_to_another_protein() -> None:
    # a codon with N is dropped, so the frame's DNA (3p + 1 bases) ends before the last codon
    one = [f for f in six_frames(Chunk("r", 1, 0, "NNNATGA")) if f.offset == 0 and f.strand is Strand.FORWARD]
    two = [f for f in six_frames(Chunk("r", 2, 0, "NNNAAAA")) if f.offset == 0 and f.strand is Strand.FORWARD]
    assert one[0].dna == two[0].dna and one[0].protein != two[0].protein


def test_each_stage_dedupes_by_its_own_models_input(tmp_path: Path) -> None:
    paths = OutputPaths(tmp_path)
    s0 = write_shard(tmp_path / "s0.tsv", 0, [_frame("a", "ACGTA", "MK"), _frame("b", "ACGTA", "MR")])
    s1 = write_shard(tmp_path / "s1.tsv", 1, [_frame("c", "ACGTA", "MK"), _frame("d", "TTTTT", "FF")])
    dna = dedupe.plan_unique(FeatureStage.DNABERT, [s0, s1], [s0, s1], paths)
    esm = dedupe.plan_unique(FeatureStage.ESM, [s0, s1], [s0, s1], paths)
    assert [u.duplicates for u in dna] == [1, 1]
    assert [u.duplicates for u in esm] == [0, 1]
    assert dna[1].rows[0] == ("cF1", "shard_000000", "aF1")  # the representative, an earlier shard
    assert esm[0].work is s0 and not esm[0].needs_expanding  # nothing to drop: computed as it is
    assert [f.frame_id for f in read_shard(dna[1].work.path)] == ["dF1"]


def test_a_shard_is_expanded_from_its_unique_rows_and_earlier_shards(tmp_path: Path) -> None:
    paths = OutputPaths(tmp_path)
    s0 = write_shard(tmp_path / "s0.tsv", 0, [_frame("a", "AAAA", "K"), _frame("b", "CCCC", "P")])
    s1 = write_shard(tmp_path / "s1.tsv", 1, [_frame("c", "CCCC", "P"), _frame("d", "GGGG", "G"),
                                               _frame("e", "GGGG", "G")])
    planned = dedupe.plan_unique(FeatureStage.DNABERT, [s0, s1], [s1], paths)  # s0 done already
    save_features(paths.feature_file("dnabert", "shard_000000"), ["aF1", "bF1"], np.array([[1.0], [2.0]]))
    (unique,) = planned
    assert unique.work_ids == ["dF1"] and not dedupe.work_done(unique)
    save_features(unique.out_path, ["dF1"], np.array([[3.0]]))  # what a worker writes
    assert dedupe.work_done(unique)
    dedupe.expand(FeatureStage.DNABERT, unique, paths)
    full = paths.feature_file("dnabert", "shard_000001")
    assert features_complete(full, ["cF1", "dF1", "eF1"])
    with np.load(full) as data:
        assert list(data["ids"]) == ["cF1", "dF1", "eF1"]
        assert data["emb"].tolist() == [[2.0], [3.0], [3.0]]
    dedupe.remove_unique(paths, FeatureStage.DNABERT)
    assert not dedupe.unique_dir(paths, FeatureStage.DNABERT).exists()


def test_the_switch_off_computes_every_frame(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(dedupe, "DEDUPE", False)
    s0 = write_shard(tmp_path / "s0.tsv", 0, [_frame("a", "AAAA", "K"), _frame("b", "AAAA", "K")])
    (unique,) = dedupe.plan_unique(FeatureStage.ESM, [s0], [s0], OutputPaths(tmp_path))
    assert unique.duplicates == 0 and unique.work is s0


def test_shards_are_expanded_as_soon_as_their_sources_are_complete(tmp_path: Path) -> None:
    paths = OutputPaths(tmp_path)
    s0 = write_shard(tmp_path / "s0.tsv", 0, [_frame("a", "AAAA", "K"), _frame("b", "CCCC", "P")])
    s1 = write_shard(tmp_path / "s1.tsv", 1, [_frame("c", "GGGG", "G"), _frame("d", "GGGG", "G")])
    s2 = write_shard(tmp_path / "s2.tsv", 2, [_frame("e", "CCCC", "P"), _frame("f", "TTTT", "F")])
    shards = [s0, s1, s2]
    planned = dedupe.plan_unique(FeatureStage.DNABERT, shards, shards, paths)
    assert [u.needs_expanding for u in planned] == [False, True, True]
    completed: list[tuple[str, bool]] = []  # each shard as its full file is written, and whether it was
    expansion = dedupe.Expansion(FeatureStage.DNABERT, shards, planned, [], paths, on_complete=lambda shard:
                                 completed.append((shard.name, paths.feature_file("dnabert", shard.name).is_file())))
    full = [paths.feature_file("dnabert", s.name) for s in shards]

    def computed(unique: dedupe.UniqueShard, rows: list[list[float]]) -> None:  # a worker's file, then the news
        save_features(unique.out_path, unique.work_ids, np.array(rows))
        expansion.computed(unique.shard.shard_id)

    computed(planned[2], [[6.0]])  # its row for eF1 is s0's bF1: s0 is not complete yet
    assert not full[2].exists() and expansion.expanded == 0
    computed(planned[1], [[3.0]])  # copies only from itself: expanded at once
    assert features_complete(full[1], ["cF1", "dF1"]) and expansion.expanded == 1
    computed(planned[0], [[1.0], [2.0]])  # computed straight into its file; now s2 can be expanded
    assert expansion.expanded == 2
    with np.load(full[2]) as data:
        assert list(data["ids"]) == ["eF1", "fF1"] and data["emb"].tolist() == [[2.0], [6.0]]
    expansion.finish()  # nothing left
    assert completed == [("shard_000001", True), ("shard_000000", True), ("shard_000002", True)]


def test_finishing_expands_what_is_left(tmp_path: Path) -> None:
    paths = OutputPaths(tmp_path)
    s0 = write_shard(tmp_path / "s0.tsv", 0, [_frame("a", "AAAA", "K")])
    s1 = write_shard(tmp_path / "s1.tsv", 1, [_frame("b", "AAAA", "K")])  # every frame a duplicate
    planned = dedupe.plan_unique(FeatureStage.ESM, [s0, s1], [s0, s1], paths)
    assert planned[1].work is None
    expansion = dedupe.Expansion(FeatureStage.ESM, [s0, s1], planned, [1], paths)
    save_features(planned[0].out_path, ["aF1"], np.array([[5.0]]))
    expansion.finish()
    assert features_complete(paths.feature_file("esm", "shard_000001"), ["bF1"])
