"""Cache keys: work is reused only when everything that made it is the same."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from virnucpro.pipeline.work_keys import claim_folder, read_key, record_model_sha256, score_key, settled_key


def _folder_with_work(tmp_path: Path, model: Path, key: dict) -> Path:
    folder = tmp_path / "features"
    assert claim_folder(folder, key, "features", model=model) is False  # nothing there yet
    (folder / "shard_000000.npz").write_bytes(b"work")
    return folder


def test_the_same_file_is_recognised_without_hashing_and_a_copy_by_its_sha(tmp_path: Path) -> None:
    model = tmp_path / "esm.pt"
    model.write_bytes(b"weights v1")
    key = {"stage": "esm", "format": 1, "precision": "fp32"}
    folder = _folder_with_work(tmp_path, model, key)
    assert "model_sha256" not in read_key(folder)  # not hashed on the stage's path
    assert claim_folder(folder, key, "features", model=model) is False
    record_model_sha256(folder, model)
    assert len(read_key(folder)["model_sha256"]) == 64

    copy = tmp_path / "elsewhere" / "esm.pt"
    copy.parent.mkdir()
    shutil.copy(model, copy)  # another place, the same bytes: the work stays
    assert claim_folder(folder, key, "features", model=copy) is False
    assert (folder / "shard_000000.npz").exists()
    assert read_key(folder)["model_identity"][0] == str(copy.resolve())


def test_the_settled_key_is_the_key_once_the_models_sha_is_recorded(tmp_path: Path) -> None:
    model = tmp_path / "esm.pt"
    model.write_bytes(b"weights v1")
    folder = _folder_with_work(tmp_path, model, {"stage": "esm", "format": 1, "precision": "fp16"})
    before = read_key(folder)
    settled = settled_key(folder, model)
    assert "model_sha256" not in before and len(settled["model_sha256"]) == 64
    assert read_key(folder) == before  # reading it writes nothing
    record_model_sha256(folder, model)
    assert read_key(folder) == settled == settled_key(folder, model)
    other = tmp_path / "other.pt"
    other.write_bytes(b"weights v2")
    assert settled_key(folder, other) == settled  # a key naming another file: as it is


def test_a_changed_model_or_setting_empties_the_folder(tmp_path: Path) -> None:
    model = tmp_path / "esm.pt"
    model.write_bytes(b"weights v1")
    key = {"stage": "esm", "format": 1, "precision": "fp32"}
    folder = _folder_with_work(tmp_path, model, key)
    model.write_bytes(b"weights v2")  # changed in place, never hashed before: stale
    os.utime(model, ns=(1, 1))
    assert claim_folder(folder, key, "features", model=model) is True
    assert not (folder / "shard_000000.npz").exists()

    (folder / "shard_000000.npz").write_bytes(b"work")
    assert claim_folder(folder, {**key, "precision": "bf16"}, "features", model=model) is True
    assert read_key(folder)["precision"] == "bf16"


def test_scores_key_names_the_features_by_content(tmp_path: Path) -> None:
    classifier = tmp_path / "500_model.pth"
    classifier.write_bytes(b"mlp")
    here = {"esm": {"stage": "esm", "model_sha256": "a" * 64, "model_identity": ["/x", 1, 2, 3, 4]}}
    moved = {"esm": {"stage": "esm", "model_sha256": "a" * 64, "model_identity": ["/y", 9, 9, 9, 9]}}
    assert score_key(classifier, here) == score_key(classifier, moved)
    other = {"esm": {"stage": "esm", "model_sha256": "b" * 64}}
    assert score_key(classifier, here) != score_key(classifier, other)


def test_the_feature_key_names_the_model_code(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from virnucpro.models.discovery import ModelLocation
    from virnucpro.pipeline import work_keys
    from virnucpro.pipeline.stage import FeatureStage

    model = ModelLocation("esm", tmp_path / "esm.pt", "option", "option --esm-model")
    key = work_keys.feature_key(FeatureStage.ESM, model, "fp32")
    assert len(key["models_code_sha256"]) == 64
    monkeypatch.setattr(work_keys, "models_code_sha256", lambda: "0" * 64)  # a patched build
    assert work_keys.feature_key(FeatureStage.ESM, model, "fp32") != key


def test_the_code_identity_covers_the_models_source_and_the_package_data(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    from virnucpro.models import code_identity

    package = Path(code_identity.__file__).parents[1]
    copy = tmp_path / "virnucpro"
    shutil.copytree(package / "models", copy / "models", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(package / "data", copy / "data")
    monkeypatch.setattr(code_identity, "__file__", str(copy / "models" / "code_identity.py"))

    def identity() -> str:
        code_identity.models_code_sha256.cache_clear()
        return code_identity.models_code_sha256()

    try:
        before = identity()
        assert before == identity()
        calibration = copy / "data" / "fp8_calibration_proteins.txt"
        calibration.write_text(calibration.read_text() + "MKV\n")  # another calibration set
        after_data = identity()
        (copy / "models" / "fast" / "fp8.py").write_text("# patched\n")
        after_code = identity()
    finally:
        code_identity.models_code_sha256.cache_clear()
    assert len({before, after_data, after_code}) == 3
