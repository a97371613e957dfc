"""Nothing stale, nothing of the user's deleted, no partial set (issue: resume keys, output dir).

One sample, tiny demo models, CPU. Each cached artefact is keyed by what produced it: a changed
classifier re-scores without re-embedding; an encoder changed in place re-embeds its stage only;
another precision re-embeds both. The outputs always equal a fresh run's with the same models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.pipeline_helpers import write_sample
from virnucpro.config import DeviceKind, ModelPaths, Precision, RunConfig
from virnucpro.errors import ModelNotFoundError, OutputError
from virnucpro.models.demo import make_demo_models
from virnucpro.pipeline.prediction import run_prediction

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("in") / "s.fa", 6)


@pytest.fixture(scope="module")
def other_models(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_demo_models(tmp_path_factory.mktemp("other_models"), seed=7)


@pytest.fixture()
def models(demo_models, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private copy of the demo models, so a test may change a file in place."""
    root = tmp_path / "models"
    shutil.copytree(demo_models.root, root)
    return ModelPaths(root / demo_models.dnabert.name, root / demo_models.esm.name,
                      root / demo_models.classifier(500).name)


def _run(sample: Path, out: Path, models: ModelPaths, **overrides):  # type: ignore[no-untyped-def]
    config = RunConfig(input_fasta=sample, output_dir=out, models=models, device=DeviceKind.CPU,
                       persistent_models=True, **overrides)
    return run_prediction(config)


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in TABLES}


def test_each_model_change_recomputes_what_it_invalidates(sample: Path, models, other_models, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    first = _run(sample, out, models)
    assert [s.resumed for s in first.stages] == [False, False]
    first_tables = _tables(out)

    again = _run(sample, out, models)  # same everything: nothing recomputed, first figures kept
    assert [s.resumed for s in again.stages] == [True, True]
    assert [s.frames for s in again.stages] == [s.frames for s in first.stages]
    assert again.classify.shards_skipped == len(again.prepared.shards)
    info = json.loads((out / "run_info.json").read_text())
    assert [s["resumed"] for s in info["stages"]] == [True, True]

    # a new classifier: re-scored, not re-embedded
    new_classifier = ModelPaths(models.dnabert, models.esm, other_models.classifier(500))
    rescored = _run(sample, out, new_classifier)
    assert [s.resumed for s in rescored.stages] == [True, True]
    assert rescored.classify.shards_skipped == 0
    fresh = _run(sample, tmp_path / "fresh-classifier", new_classifier)
    assert _tables(out) == _tables(tmp_path / "fresh-classifier")
    assert _tables(out)["prediction_results.txt"] != first_tables["prediction_results.txt"]  # it mattered
    assert json.loads((out / "run_info.json").read_text())["models"]["classifier"]["sha256"] == \
        fresh.info.models["classifier"].sha256

    # the ESM-2 checkpoint changed in place (same path): ESM-2 re-embedded, DNABERT-S kept
    shutil.copy(other_models.esm, models.esm)
    caplog.clear()
    changed = _run(sample, out, new_classifier)
    assert [s.resumed for s in changed.stages] == [True, False]
    assert "ESM-2 features" in caplog.text and "another model" in caplog.text
    n_shards = len(changed.prepared.shards)  # every shard re-scored, beside the re-run ESM-2 stage
    assert changed.stages[-1].shards_scored == n_shards and changed.classify.shards_skipped == n_shards

    # the DNABERT-S weights changed in place: DNABERT-S re-embedded
    for name in ("pytorch_model.bin", "model.safetensors"):
        if (other_models.dnabert / name).exists():
            shutil.copy(other_models.dnabert / name, models.dnabert / name)
    changed = _run(sample, out, new_classifier)
    assert [s.resumed for s in changed.stages] == [False, True]
    assert changed.classify.shards_skipped == 0  # ESM-2 had nothing to compute: scored in the classify step
    reference = _run(sample, tmp_path / "fresh-all", new_classifier)
    assert _tables(out) == _tables(tmp_path / "fresh-all")
    assert reference.info.models["esm"].sha256 == changed.info.models["esm"].sha256


def test_another_precision_recomputes_both_stages(sample: Path, models, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    _run(sample, out, models)
    caplog.clear()
    again = _run(sample, out, models, precision=Precision.BF16)
    assert [s.resumed for s in again.stages] == [False, False]
    assert "another precision" in caplog.text
    assert json.loads((out / "run_info.json").read_text())["precision"] == "bf16"


def test_a_users_files_are_never_deleted(sample: Path, models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.html").write_text("<p>my own report</p>")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="report.html exists and VirNucPro cannot tell"):
        _run(sample, out, models)
    assert (out / "report.html").read_text() == "<p>my own report</p>"
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "prediction_results.txt").exists()


def test_a_failed_run_leaves_no_complete_looking_outputs(sample: Path, models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    _run(sample, out, models)
    assert all((out / name).exists() for name in (*TABLES, "run_info.json", "report.html"))
    (out / "notes.txt").write_text("keep me")
    missing = ModelPaths(models.dnabert, tmp_path / "nope.pt", models.classifier)
    with pytest.raises(ModelNotFoundError):
        _run(sample, out, missing)  # fails at model resolution: the earlier outputs are gone already
    assert not any((out / name).exists() for name in (*TABLES, "run_info.json", "report.html"))
    assert (out / "notes.txt").read_text() == "keep me"
    # an edited output is the user's now: a later run refuses to remove it
    _run(sample, out, models)
    (out / "prediction_sequences.tsv").write_text("edited\n")
    with pytest.raises(OutputError, match="prediction_sequences.tsv exists"):
        _run(sample, out, models)
    assert (out / "prediction_sequences.tsv").read_text() == "edited\n"


def test_a_failure_while_writing_outputs_publishes_none(sample: Path, models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import virnucpro.pipeline.finalize as finalize

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(finalize, "render_report", broken)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        _run(sample, out, models)
    assert not any((out / name).exists() for name in (*TABLES, "run_info.json", "report.html"))
