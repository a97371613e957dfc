"""EmbeddingCache: producer folders, look-up, adding only new rows, bad packs and unwritable caches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from virnucpro.pipeline.embedding_cache import EmbeddingCache, cache_dir_error, input_sha256, producer_key
from virnucpro.pipeline.shards import ShardFrame
from virnucpro.pipeline.stage import FeatureStage


def _key(**changes: object) -> dict:
    values = dict(stage=FeatureStage.ESM, model_sha256="a" * 64, precision="fp32", device_kind="cpu",
                  tokenizer_sha256=None, feature_format=1)
    values.update(changes)
    return producer_key(**values)  # type: ignore[arg-type]


def _rows(n: int, dim: int = 4, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * dim, dtype=np.float32).reshape(n, dim) + start)


def test_each_producer_setting_is_its_own_folder(tmp_path: Path) -> None:
    base = EmbeddingCache(tmp_path, _key()).folder
    for change in ({"model_sha256": "b" * 64}, {"precision": "fp16"}, {"device_kind": "cuda"},
                   {"tokenizer_sha256": "c" * 64}, {"feature_format": 2}, {"stage": FeatureStage.DNABERT}):
        assert EmbeddingCache(tmp_path, _key(**change)).folder != base, change
    assert EmbeddingCache(tmp_path, _key()).folder == base
    key = _key()
    assert {"virnucpro", "torch", "models_code_sha256"} <= set(key) and key["stage"] == "esm"
    assert len(key["models_code_sha256"]) == 64


def test_the_model_input_is_what_each_stage_reads() -> None:
    frame = ShardFrame("f1", "r1", "c1", "ATGAAA", "MK")
    other_dna = ShardFrame("f2", "r1", "c2", "ATGAAG", "MK")  # same protein, other DNA
    assert input_sha256(FeatureStage.ESM, frame) == input_sha256(FeatureStage.ESM, other_dna)
    assert input_sha256(FeatureStage.DNABERT, frame) != input_sha256(FeatureStage.DNABERT, other_dna)


def test_rows_added_are_found_by_a_new_cache_object_and_only_new_rows_are_stored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, _key())
    assert cache.add(["s1", "s2"], _rows(2)) == 2
    assert cache.add(["s2", "s3"], _rows(2, start=100)) == 1  # s2 is there already
    later = EmbeddingCache(tmp_path, _key())
    hits = later.lookup(["s1", "s2", "s3", "s4"])
    assert set(hits) == {"s1", "s2", "s3"}
    assert len({hit.pack for hit in hits.values()}) == 2
    with np.load(hits["s3"].pack) as data:
        stored = dict(zip([str(i) for i in data["ids"]], data["emb"]))
    np.testing.assert_array_equal(stored["s3"], _rows(2, start=100)[1])
    assert "s2" not in stored  # never written twice
    assert (later.folder / "KEY.json").is_file()


def test_a_pack_with_a_non_finite_row_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path, _key())
    rows = _rows(2)
    rows[1, 0] = np.nan
    cache.add(["s1", "s2"], rows)
    with caplog.at_level(logging.WARNING):
        assert EmbeddingCache(tmp_path, _key()).lookup(["s1"]) == {}
    assert "computed again" in caplog.text


def test_a_cache_that_cannot_be_written_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("mine\n")  # the cache's folder would have to be inside a file: fails for root too
    with caplog.at_level(logging.WARNING):
        assert EmbeddingCache(a_file / "cache", _key()).add(["s1"], _rows(1)) == 0
    assert "could not add 1 rows" in caplog.text and a_file.read_text() == "mine\n"


def test_a_full_disk_while_adding_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from virnucpro.pipeline import embedding_cache

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embedding_cache, "save_features", full)
    with caplog.at_level(logging.WARNING):
        assert EmbeddingCache(tmp_path, _key()).add(["s1"], _rows(1)) == 0
    assert "could not add 1 rows" in caplog.text and "No space left" in caplog.text


def test_cache_dir_errors_name_the_fix(tmp_path: Path) -> None:
    assert cache_dir_error(tmp_path / "new" / "cache") is None  # created when first written
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert "is a file, not a directory" in (cache_dir_error(a_file) or "")
