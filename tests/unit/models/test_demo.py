"""Demo models: real formats, loadable by us and by fair-esm, deterministic, clearly marked."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import esm
import torch
from safetensors import safe_open

from virnucpro.models.demo import DEMO_MARKER, DemoModels, is_demo_model, make_demo_models
from virnucpro.models.reference.classifier import load_classifier
from virnucpro.models.reference.dnabert import load_dnabert
from virnucpro.models.reference.esm2 import load_esm2

CPU = torch.device("cpu")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    return data["model"] if "model" in data else data


def test_layout_and_marker(demo_models: DemoModels) -> None:
    root = demo_models.root
    assert {p.name for p in demo_models.dnabert.iterdir()} == {
        "config.json", "pytorch_model.bin", "tokenizer.json", "special_tokens_map.json",
        "tokenizer_config.json",
    }  # fmt: skip
    config = json.loads((demo_models.dnabert / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "bert_layers.BertModel"
    assert (config["num_attention_heads"], config["hidden_size"]) == (12, 48)
    assert (root / "esm2_t36_3B_UR50D-contact-regression.pt").is_file()
    marker = json.loads((root / DEMO_MARKER).read_text())
    assert marker["demo"] is True and "meaningless" in marker["warning"]
    assert "500_model.pth" in marker["files"] and "dnabert_s" in marker["files"]


def test_dnabert_weights_are_in_bert_model_layout(demo_models: DemoModels) -> None:
    keys = set(_tensors(demo_models.dnabert / "pytorch_model.bin"))
    assert "pooler.dense.weight" in keys and "encoder.layer.1.mlp.gated_layers.weight" in keys
    assert not any(k.startswith("bert.") for k in keys) and len(keys) == 28


def test_loadable_by_our_loaders(demo_models: DemoModels) -> None:
    dnabert, tokenizer = load_dnabert(demo_models.dnabert, CPU, torch.float32)
    esm2 = load_esm2(demo_models.esm, CPU, torch.float32)
    for length in (300, 500):
        for path in (demo_models.classifiers[length], demo_models.classifiers_safetensors[length]):
            assert load_classifier(path).input_dim == dnabert.dim + esm2.dim
    assert tokenizer.source == demo_models.dnabert / "tokenizer.json"


def test_esm_checkpoint_loads_in_fair_esm(demo_models: DemoModels) -> None:
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(demo_models.esm, weights_only=True)
        regression = torch.load(
            demo_models.esm.with_name("esm2_t36_3B_UR50D-contact-regression.pt"), weights_only=True
        )
    model, alphabet = esm.pretrained.load_model_and_alphabet_core("esm2_t36_3B_UR50D", data, regression)
    assert model.num_layers == 36 and model.embed_dim == 16 and len(alphabet) == 33


def test_deterministic_given_the_seed(demo_models: DemoModels, tmp_path: Path) -> None:
    again = make_demo_models(tmp_path / "again", seed=0)
    other = make_demo_models(tmp_path / "other", seed=1)
    for name in ("dnabert_s/pytorch_model.bin", "esm2_t36_3B_UR50D.pt", "500_model.pth"):
        if name.endswith("500_model.pth"):
            a = load_classifier(demo_models.root / name).state_dict()
            b = load_classifier(again.root / name).state_dict()
            c = load_classifier(other.root / name).state_dict()
        else:
            a, b, c = (_tensors(r / name) for r in (demo_models.root, again.root, other.root))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    config = "config.json"
    assert (demo_models.dnabert / config).read_bytes() == (again.dnabert / config).read_bytes()
    first, second = demo_models.classifiers_safetensors[500], again.classifiers_safetensors[500]
    with safe_open(str(first), "pt") as fa, safe_open(str(second), "pt") as fb:
        assert fa.metadata() == fb.metadata()  # (bytes differ: the header's key order is not fixed)
        assert all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())


def test_is_demo_model(demo_models: DemoModels, golden_tiny_dir: Path, tmp_path: Path) -> None:
    assert is_demo_model(demo_models.dnabert)
    assert is_demo_model(demo_models.dnabert / "pytorch_model.bin")
    assert is_demo_model(demo_models.esm) and is_demo_model(demo_models.classifiers[300])
    assert not is_demo_model(golden_tiny_dir / "esm2_t36_tiny.pt")
    stray = tmp_path / "unlisted.pth"
    stray.write_bytes(b"x")
    assert not is_demo_model(stray)
