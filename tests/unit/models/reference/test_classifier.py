"""Classifier: safe loading of original pickles, refusing code, safetensors, classify()."""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from virnucpro.errors import ModelLoadError
from virnucpro.models.demo import random_classifier, write_original_classifier
from virnucpro.models.reference.classifier import (
    CLASSIFY_BATCH_ROWS,
    MLPClassifier,
    classify,
    load_classifier,
    save_classifier,
)


def _globals_in(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {
        str(arg).replace(" ", ".")
        for op, arg, _ in pickletools.genops(io.BytesIO(data))
        if op.name == "GLOBAL"
    }


@pytest.fixture()
def model() -> MLPClassifier:
    return random_classifier(input_dim=12, hidden_dim=6, seed=5)


def _same(a: MLPClassifier, b: MLPClassifier) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_original_style_pickle_loads_with_bn_statistics(model: MLPClassifier, tmp_path: Path) -> None:
    path = write_original_classifier(model, tmp_path / "500_model.pth")
    assert "__main__.MLPClassifier" in _globals_in(path)
    loaded = load_classifier(path)
    _same(model, loaded)
    assert not loaded.training
    assert int(loaded.bn1.num_batches_tracked) == 1000


def test_saving_the_original_format_leaves_main_untouched(model: MLPClassifier, tmp_path: Path) -> None:
    import __main__

    before = getattr(__main__, "MLPClassifier", None)
    write_original_classifier(model, tmp_path / "m.pth")
    assert getattr(__main__, "MLPClassifier", None) is before
    assert type(model) is MLPClassifier and not model.training


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "payload_ran"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {canary}",))

    path = tmp_path / "500_model.pth"
    torch.save({"hidden_layer.weight": Exploit()}, path)
    with pytest.raises(ModelLoadError, match=r"refused to load .*'(posix|os)\.system'") as info:
        load_classifier(path)
    assert "never load untrusted pickles" in str(info.value)
    assert not canary.exists()


def test_pickled_module_of_an_unknown_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()), path)
    with pytest.raises(ModelLoadError, match=r"'torch\.nn\.modules\.activation\.Tanh'"):
        load_classifier(path)


def test_sequential_of_the_same_layers_is_accepted(tmp_path: Path) -> None:
    seq = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(3, 2),
    )  # fmt: skip
    torch.save(seq, tmp_path / "seq.pth")
    loaded = load_classifier(tmp_path / "seq.pth")
    assert (loaded.input_dim, loaded.hidden_dim, loaded.num_class) == (4, 3, 2)
    assert torch.equal(loaded.output_layer.weight, seq[4].weight)


def test_state_dict_pth_loads(model: MLPClassifier, tmp_path: Path) -> None:
    torch.save(model.state_dict(), tmp_path / "state.pth")
    _same(model, load_classifier(tmp_path / "state.pth"))


def test_safetensors_round_trip(model: MLPClassifier, tmp_path: Path) -> None:
    save_classifier(model, tmp_path / "m.safetensors")
    loaded = load_classifier(tmp_path / "m.safetensors")
    _same(model, loaded)
    features = torch.randn(7, 12, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(classify(model, features), classify(loaded, features))


def test_safetensors_are_as_readable_as_other_files(model: MLPClassifier, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_classifier(model, tmp_path / "m.safetensors")
        torch.save(model.state_dict(), tmp_path / "m.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644  # was 0600
    assert (tmp_path / "m.pth").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="not a VirNucPro classifier"):
        load_classifier(tmp_path / "x.safetensors")


def test_format_detected_by_content_not_name(model: MLPClassifier, tmp_path: Path) -> None:
    save_classifier(model, tmp_path / "500_model.pth")  # safetensors under a .pth name
    _same(model, load_classifier(tmp_path / "500_model.pth"))
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(ModelLoadError, match="neither a PyTorch .pth nor a safetensors"):
        load_classifier(tmp_path / "text.pth")


def test_classify_is_softmax_in_batches_of_256(model: MLPClassifier) -> None:
    features = torch.randn(CLASSIFY_BATCH_ROWS * 2 + 3, 12, generator=torch.Generator().manual_seed(1))
    probs = classify(model, features)
    assert probs.shape == (515, 2) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    with torch.inference_mode():
        first = torch.softmax(model(features[:CLASSIFY_BATCH_ROWS]), dim=1).numpy()
    assert np.array_equal(probs[:CLASSIFY_BATCH_ROWS], first)


def test_classify_rejects_wrong_width(model: MLPClassifier) -> None:
    with pytest.raises(ValueError, match=r"features must be \[N, 12\]"):
        classify(model, torch.zeros(3, 13))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot open the classifier file"):
        load_classifier(tmp_path / "absent.pth")
