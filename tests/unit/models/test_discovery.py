"""Model discovery: option → environment → caches → an error that says how to fix it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from virnucpro.domain.checksums import sha256_file
from virnucpro.errors import ModelNotFoundError
from virnucpro.models.demo import DemoModels
from virnucpro.models.check import describe_models, format_model_check
from virnucpro.models.discovery import find_models, resolve_models


def _dnabert_dir(path: Path, tokenizer: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "pytorch_model.bin").write_bytes(b"weights")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def _file(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """An empty HOME, so the real user's caches never leak into a test."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def _hf_snapshot(hub: Path, rev: str, ref: bool = True) -> Path:
    repo = hub / "models--zhihan1996--DNABERT-S"
    snap = _dnabert_dir(repo / "snapshots" / rev)
    if ref:
        _file(repo / "refs" / "main", rev.encode())
    return snap


def test_options_win_over_environment(tmp_path: Path, home: Path) -> None:
    d = _dnabert_dir(tmp_path / "opt_dnabert")
    e = _file(tmp_path / "opt.pt")
    c = _file(tmp_path / "opt_500.pth")
    env = {
        "HOME": str(home),
        "VIRNUCPRO_DNABERT_MODEL": str(_dnabert_dir(tmp_path / "env_dnabert")),
        "VIRNUCPRO_ESM_MODEL": str(_file(tmp_path / "env.pt")),
        "VIRNUCPRO_CLASSIFIER": str(_file(tmp_path / "env.pth")),
    }
    found = resolve_models(d, e, c, 500, env)
    assert (found.dnabert.path, found.esm.path, found.classifier.path) == (d, e, c)
    assert {m.source for m in found} == {"option"}
    assert found.esm.found_via == "option --esm-model"


def test_an_explicit_path_is_named_as_its_entry_point_names_it(tmp_path: Path, home: Path) -> None:
    d, e, c = _dnabert_dir(tmp_path / "d"), _file(tmp_path / "e.pt"), _file(tmp_path / "c.pth")
    found = resolve_models(d, e, c, 500, {"HOME": str(home)}, origin="parameter")
    assert [m.found_via for m in found] == ["parameter dnabert_model", "parameter esm_model",
                                            "parameter classifier"]
    with pytest.raises(ModelNotFoundError) as info:
        resolve_models(tmp_path / "gone", None, None, 500, {"HOME": str(home)}, origin="parameter")
    text = str(info.value)
    assert f"parameter dnabert_model {tmp_path / 'gone'} does not exist" in text
    assert "or set the parameter esm_model=FILE" in text


def test_the_names_of_explicit_paths_are_the_run_parameters() -> None:
    from virnucpro.models import discovery
    from virnucpro.pipeline.parameters import parameter

    for kind, name in discovery._PARAMETER.items():
        assert discovery._OPTION[kind] == parameter(name).option


def test_specific_variables_then_models_dir(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "models"
    _dnabert_dir(root / "dnabert_s")
    _file(root / "esm2_t36_3B_UR50D.pt")
    _file(root / "300_model.safetensors")
    _file(root / "500_model.pth")
    env = {
        "HOME": str(home),
        "VIRNUCPRO_MODELS_DIR": str(root),
        "VIRNUCPRO_ESM_MODEL": str(_file(tmp_path / "specific.pt")),
    }
    found = resolve_models(None, None, None, 300, env)
    assert found.dnabert.path == root / "dnabert_s"
    assert found.esm.path == tmp_path / "specific.pt" and found.esm.found_via == "$VIRNUCPRO_ESM_MODEL"
    assert found.classifier.path == root / "300_model.safetensors"
    assert resolve_models(None, None, None, 500, env).classifier.path == root / "500_model.pth"
    assert {m.source for m in found} == {"environment"}


def test_environment_wins_over_caches(tmp_path: Path, home: Path) -> None:
    hub = home / ".cache" / "huggingface" / "hub"
    _hf_snapshot(hub, "abc")
    _file(home / ".cache" / "torch" / "hub" / "checkpoints" / "esm2_t36_3B_UR50D.pt")
    env = {
        "HOME": str(home),
        "VIRNUCPRO_DNABERT_MODEL": str(_dnabert_dir(tmp_path / "mine")),
        "VIRNUCPRO_CLASSIFIER": str(_file(tmp_path / "c.pth")),
    }
    found = resolve_models(None, None, None, 500, env)
    assert found.dnabert.source == "environment" and found.esm.source == "cache"


def test_original_caches_default_locations(home: Path, tmp_path: Path) -> None:
    hub = home / ".cache" / "huggingface" / "hub"
    snap = _hf_snapshot(hub, "d064dec")
    esm = _file(home / ".cache" / "torch" / "hub" / "checkpoints" / "esm2_t36_3B_UR50D.pt")
    env = {"HOME": str(home)}
    found = resolve_models(None, None, _file(tmp_path / "500_model.pth"), 500, env)
    assert found.dnabert.path == snap and found.dnabert.source == "cache"
    assert found.esm.path == esm and found.esm.source == "cache"


def test_cache_variables_are_honoured(tmp_path: Path, home: Path) -> None:
    snap = _hf_snapshot(tmp_path / "hubcache", "rev1")
    esm = _file(tmp_path / "th" / "hub" / "checkpoints" / "esm2_t36_3B_UR50D.pt")
    env = {
        "HOME": str(home),
        "HF_HUB_CACHE": str(tmp_path / "hubcache"),
        "TORCH_HOME": str(tmp_path / "th"),
    }
    found = resolve_models(None, None, _file(tmp_path / "c.pth"), 500, env)
    assert found.dnabert.path == snap and found.esm.path == esm
    snap2 = _hf_snapshot(tmp_path / "hfhome" / "hub", "rev2")
    env2 = {"HOME": str(home), "HF_HOME": str(tmp_path / "hfhome"), "TORCH_HOME": str(tmp_path / "th")}
    assert resolve_models(None, None, tmp_path / "c.pth", 500, env2).dnabert.path == snap2


def test_hf_snapshot_follows_refs_main_else_newest(tmp_path: Path, home: Path) -> None:
    hub = tmp_path / "hub"
    named = _hf_snapshot(hub, "aaa")
    newer = _hf_snapshot(hub, "zzz", ref=False)
    later = time.time() + 10
    os.utime(newer, (later, later))
    env = {"HOME": str(home), "HF_HUB_CACHE": str(hub), "TORCH_HOME": str(tmp_path)}
    esm = _file(tmp_path / "e.pt")
    assert resolve_models(None, esm, esm, 500, env).dnabert.path == named
    (hub / "models--zhihan1996--DNABERT-S" / "refs" / "main").unlink()
    assert resolve_models(None, esm, esm, 500, env).dnabert.path == newer


def test_hf_repo_directory_given_as_option_resolves_its_snapshot(tmp_path: Path, home: Path) -> None:
    snap = _hf_snapshot(tmp_path / "hub", "r1")
    esm = _file(tmp_path / "e.pt")
    found = resolve_models(snap.parents[1], esm, esm, 500, {"HOME": str(home)})
    assert found.dnabert.path == snap


def test_nothing_found_names_files_places_and_fixes(tmp_path: Path, home: Path) -> None:
    env = {"HOME": str(home), "TORCH_HOME": str(tmp_path / "th")}
    with pytest.raises(ModelNotFoundError) as info:
        resolve_models(None, None, None, 300, env)
    text = str(info.value)
    assert (
        "dnabert: a DNABERT-S directory (config.json + pytorch_model.bin or model.safetensors) "
        "was not found" in text
    )
    assert "esm: esm2_t36_3B_UR50D.pt was not found" in text
    assert "classifier: 300_model.pth or 300_model.safetensors was not found" in text
    assert "$VIRNUCPRO_DNABERT_MODEL (not set)" in text and "$VIRNUCPRO_MODELS_DIR (not set)" in text
    hub = home / ".cache" / "huggingface" / "hub" / "models--zhihan1996--DNABERT-S"
    assert f"{hub}/snapshots/<refs/main or newest>/ (Hugging Face cache)" in text
    checkpoints = tmp_path / "th" / "hub" / "checkpoints"
    assert f"{checkpoints / 'esm2_t36_3B_UR50D.pt'} (torch hub cache)" in text
    assert (
        "copy the DNABERT-S snapshot directory (config.json, pytorch_model.bin, tokenizer.json)"
        in text
    )
    assert "or pass --dnabert-model DIR" in text
    assert f"place esm2_t36_3B_UR50D.pt (5.7 GB) in {tmp_path / 'th' / 'hub' / 'checkpoints'}/" in text
    assert "pass --classifier 300_model.pth from the VirNucPro repository" in text


def test_only_the_missing_model_is_reported(tmp_path: Path, home: Path) -> None:
    env = {"HOME": str(home), "VIRNUCPRO_MODELS_DIR": str(tmp_path / "models")}
    _dnabert_dir(tmp_path / "models" / "dnabert_s")
    _file(tmp_path / "models" / "500_model.pth")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_models(None, None, None, 500, env)
    text = str(info.value)
    assert "esm:" in text and "dnabert:" not in text and "classifier:" not in text
    assert f"{tmp_path / 'models' / 'esm2_t36_3B_UR50D.pt'} ($VIRNUCPRO_MODELS_DIR)" in text


def test_invalid_explicit_paths_do_not_fall_through(tmp_path: Path, home: Path) -> None:
    (tmp_path / "not_a_model").mkdir()
    env = {"HOME": str(home), "VIRNUCPRO_ESM_MODEL": str(tmp_path / "gone.pt")}
    with pytest.raises(ModelNotFoundError) as info:
        resolve_models(tmp_path / "not_a_model", None, tmp_path / "missing.pth", 500, env)
    text = str(info.value)
    assert f"--dnabert-model {tmp_path / 'not_a_model'} is not a DNABERT-S directory" in text
    assert f"$VIRNUCPRO_ESM_MODEL {tmp_path / 'gone.pt'} does not exist" in text
    assert f"--classifier {tmp_path / 'missing.pth'} does not exist; give 500_model.pth" in text


def test_demo_models_are_marked_as_demo(demo_models: DemoModels, home: Path) -> None:
    env = {"HOME": str(home), "VIRNUCPRO_MODELS_DIR": str(demo_models.root)}
    found = resolve_models(None, None, None, 500, env)
    assert {m.source for m in found} == {"demo"}
    assert found.classifier.path == demo_models.classifiers[500]


def test_describe_models_lists_files_sizes_and_checksums(tmp_path: Path, home: Path) -> None:
    d = _dnabert_dir(tmp_path / "d", tokenizer=False)
    e = _file(tmp_path / "e.pt", b"esm weights")
    c = _file(tmp_path / "c.pth", b"classifier")
    resolved = find_models(d, e, c, 500, {"HOME": str(home)})
    rows = describe_models(resolved)
    assert [r["model"] for r in rows] == ["dnabert", "esm", "classifier"]
    assert rows[0]["file"] == str(d / "pytorch_model.bin") and rows[0]["size"] == 7
    assert rows[0]["sha256"] == sha256_file(d / "pytorch_model.bin")
    assert str(rows[0]["tokenizer"]).endswith("virnucpro/data/dnabert_tokenizer.json")
    assert rows[1]["sha256"] == sha256_file(e) and rows[2]["source"] == "option"
    assert "sha256" not in describe_models(resolved, checksums=False)[0]


def test_safetensors_only_dnabert_dir_is_valid(tmp_path: Path, home: Path) -> None:
    d = _dnabert_dir(tmp_path / "d")
    shutil.move(d / "pytorch_model.bin", d / "model.safetensors")
    e = _file(tmp_path / "e.pt")
    found = resolve_models(d, e, e, 500, {"HOME": str(home)})
    assert found.dnabert.weights_file == d / "model.safetensors"


def test_check_table_shows_found_and_missing_with_places_and_hints(tmp_path: Path, home: Path) -> None:
    e = _file(tmp_path / "e.pt", b"esm weights")
    env = {"HOME": str(home)}
    searches = find_models(None, e, tmp_path / "missing.pth", 500, env)
    assert [s.found for s in searches] == [False, True, False]
    table = format_model_check(describe_models(searches, checksums=False))
    lines = table.splitlines()
    assert lines[0].split() == ["model", "status", "where"]
    assert lines[1].startswith("dnabert     missing  a DNABERT-S directory")
    assert f"{home / '.cache' / 'huggingface' / 'hub' / 'models--zhihan1996--DNABERT-S'}" in table
    assert "$VIRNUCPRO_DNABERT_MODEL (not set)" in table
    assert f"esm         found    {e} (option, via option --esm-model)" in table
    assert f"classifier  missing  option --classifier {tmp_path / 'missing.pth'} does not exist" in table
    assert "2 of 3 models missing (dnabert, classifier)" in table
    assert "virnucpro models make-demo DIR" in table and "--demo-if-missing" in table
