"""Feature files: the full check used where rows are read, the cheap end-of-stage check, the
worker's finiteness check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from virnucpro.errors import WorkerError
from virnucpro.pipeline.shards import check_feature_ids, features_complete, load_features, nonfinite_rows, save_features


def test_cheap_check_accepts_any_order_and_refuses_wrong_ids(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    save_features(path, ["a", "b", "c"], np.arange(12, dtype=np.float32).reshape(3, 4))
    check_feature_ids(path, ["a", "b", "c"])
    check_feature_ids(path, ["c", "a", "b"])
    with pytest.raises(WorkerError, match=r"1 frame\(s\) missing \(d\)"):
        check_feature_ids(path, ["a", "b", "c", "d"])
    with pytest.raises(WorkerError, match=r"unexpected or repeated \(c\)"):
        check_feature_ids(path, ["a", "b"])
    save_features(path, ["a", "a"], np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(WorkerError, match="missing"):
        check_feature_ids(path, ["a", "b"])
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(WorkerError, match="unreadable.*delete it"):
        check_feature_ids(tmp_path / "bad.npz", ["a"])


def test_full_check_orders_by_id_and_refuses_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    save_features(path, ["b", "a"], np.array([[2.0], [1.0]], dtype=np.float32))
    assert load_features(path, ["a", "b"]).tolist() == [[1.0], [2.0]]
    save_features(path, ["a", "b"], np.array([[1.0], [np.nan]], dtype=np.float32))
    with pytest.raises(WorkerError, match="non-finite embeddings for frames b"):
        load_features(path, ["a", "b"])
    assert not features_complete(path, ["a", "b"]) and not path.exists()  # a bad file is removed


def test_nonfinite_rows_names_the_frames() -> None:
    emb = np.array([[1.0, 2.0], [np.inf, 0.0], [0.0, np.nan], [3.0, 4.0]], dtype=np.float32)
    assert nonfinite_rows(["w", "x", "y", "z"], emb) == ["x", "y"]
    assert nonfinite_rows([], np.zeros((0, 2), dtype=np.float32)) == []
