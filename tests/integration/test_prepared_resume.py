"""A resumed ``virnucpro predict`` reuses the preparation only when every prepared work file is
the one prepared: ``records.tsv``, ``descriptions.tsv`` and each frame shard are checked against
the size and SHA-256 that ``prepared.json`` recorded. A file emptied, truncated, deleted or edited
since is logged by name and the preparation is redone, so the outputs equal a clean run's byte
for byte (the descriptions included); a work directory from before the digests is prepared again;
a file changed while a run goes on stops that run, and the re-run is right.

End to end on the demo models (CPU), from one finished baseline run copied for each case.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.pipeline_helpers import cpu_config, write_sample
from virnucpro.cli import cli

pytest.importorskip("torch")

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv",
          "prediction_regions.tsv")
WORK = ".virnucpro_work"


def _predict(sample: Path, out: Path, demo) -> Any:  # type: ignore[no-untyped-def]
    args = ["predict", str(sample), "--output-dir", str(out), "--device", "cpu", "--shard-frames", "8",
            "--no-persistent-models", "--dnabert-model", str(demo.dnabert), "--esm-model", str(demo.esm),
            "--classifier", str(demo.classifier(500))]
    return CliRunner().invoke(cli, args, obj={}, catch_exceptions=False)


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real records, each with a description in its header (one of them non-ASCII)."""
    path = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("prep") / "s.fa", 3)
    path.write_text(path.read_text().replace("len=842", "len=842 Küste", 1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def baseline(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("baseline")
    result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    return out


def _descriptions(out: Path) -> list[str]:
    rows = (out / "prediction_sequences.tsv").read_text(encoding="utf-8").splitlines()
    return [row.split("\t")[-1] for row in rows[1:]]


def test_the_baseline_has_every_description(baseline: Path) -> None:
    assert _descriptions(baseline) == ["CP003225.1:74269-77648(+) len=3380",
                                       "CP003200.1:2882450-2883291(-) len=842 Küste",
                                       "NC_006494.1:6176-8413(-) len=2238"]


def _copy(baseline: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(baseline, out)
    return out


def _assert_same_tables(out: Path, baseline: Path) -> None:
    for name in TABLES:
        assert (out / name).read_bytes() == (baseline / name).read_bytes(), name


# -- damage to a prepared file after a run ---------------------------------------------------
def _empty_descriptions(work: Path) -> None:
    (work / "descriptions.tsv").write_bytes(b"")


def _delete_descriptions(work: Path) -> None:
    (work / "descriptions.tsv").unlink()


def _truncate_descriptions(work: Path) -> None:
    path = work / "descriptions.tsv"
    data = path.read_bytes()
    path.write_bytes(data[: data.index("Küste".encode()) + len("Kü".encode())])  # last line cut short


def _edit_records(work: Path) -> None:
    """A record's length changed; the file still lists three well-formed records."""
    path = work / "records.tsv"
    path.write_text(path.read_text(encoding="utf-8").replace("\t842\t", "\t824\t"), encoding="utf-8")


def _edit_shard_dna(work: Path) -> None:
    """One base of one frame's DNA changed (same frames, same tokens), and that shard's DNABERT-S
    features and scores removed, so a run computes them from the shard again."""
    path = work / "shards" / "shard_000000.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[0].split("\t")
    fields[3] = ("C" if fields[3][0] != "C" else "G") + fields[3][1:]
    lines[0] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")
    (work / "features" / "dnabert" / "shard_000000.npz").unlink()
    (work / "scores" / "shard_000000.npz").unlink()


DAMAGE = {
    "emptied_descriptions": (_empty_descriptions, "descriptions.tsv is 0 bytes, not the "),
    "deleted_descriptions": (_delete_descriptions, "descriptions.tsv is missing"),
    "truncated_descriptions": (_truncate_descriptions, "descriptions.tsv is "),
    "edited_records": (_edit_records, "records.tsv is not the file prepared (its SHA-256 changed"),
    "edited_shard": (_edit_shard_dna, "shards/shard_000000.tsv is not the file prepared"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_changed_prepared_file_redoes_the_preparation(  # type: ignore[no-untyped-def]
    kind: str, baseline: Path, sample: Path, demo_models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damage, logged = DAMAGE[kind]
    out = _copy(baseline, tmp_path)
    damage(out / WORK)
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(logged in m and "preparing" in m and "again" in m for m in warnings), warnings
    assert "reusing the preparation" not in caplog.text
    _assert_same_tables(out, baseline)
    assert _descriptions(out) == _descriptions(baseline)


def test_an_unchanged_preparation_is_reused(baseline: Path, sample: Path, demo_models, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            caplog: pytest.LogCaptureFixture) -> None:
    out = _copy(baseline, tmp_path)
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    assert "reusing the preparation" in caplog.text and "preparing" not in caplog.text
    _assert_same_tables(out, baseline)


def test_prepared_json_records_every_prepared_file(baseline: Path) -> None:
    from virnucpro.domain.checksums import sha256_file

    work = baseline / WORK
    manifest = json.loads((work / "prepared.json").read_text())
    shards = sorted(p.relative_to(work).as_posix() for p in (work / "shards").glob("*.tsv"))
    assert sorted(manifest["files"]) == sorted(["records.tsv", "descriptions.tsv", *shards])
    for name, recorded in manifest["files"].items():
        assert recorded == {"size": (work / name).stat().st_size, "sha256": sha256_file(work / name)}


# -- a work directory prepared before the digests (and before descriptions.tsv) --------------
def test_an_old_work_dir_is_prepared_again_and_keeps_its_features(  # type: ignore[no-untyped-def]
    baseline: Path, sample: Path, demo_models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = _copy(baseline, tmp_path)
    work = out / WORK
    manifest = json.loads((work / "prepared.json").read_text())
    del manifest["files"]
    (work / "prepared.json").write_text(json.dumps(manifest, indent=1))
    (work / "descriptions.tsv").unlink()
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    assert "prepared.json records no size and SHA-256 of the prepared files" in caplog.text
    _assert_same_tables(out, baseline)
    assert _descriptions(out) == _descriptions(baseline)
    info = json.loads((out / "run_info.json").read_text())
    assert all(stage["shards_skipped"] == stage["shards_total"] for stage in info["stages"])  # features kept


# -- a damaged prepared.json ------------------------------------------------------------------
def _not_an_object(manifest: dict) -> str:
    return "[]"


def _bad_shard_list(manifest: dict) -> str:
    return json.dumps({**manifest, "shards": [{"file": 3}]})


def _bad_files(manifest: dict) -> str:
    return json.dumps({**manifest, "files": {"records.tsv": "junk"}})


def _wrong_chunk_count(manifest: dict) -> str:
    """Silent before the counts were checked: run_info.json (and the report) showed it."""
    return json.dumps({**manifest, "n_chunks": manifest["n_chunks"] + 1})


MANIFESTS = {
    "wrong_chunk_count": (_wrong_chunk_count, "chunks and "),
    "not_an_object": (_not_an_object, "prepared.json is not a preparation record"),
    "bad_shard_list": (_bad_shard_list, "prepared.json is malformed"),
    "bad_files": (_bad_files, "prepared.json is malformed"),
}


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_a_malformed_prepared_json_is_prepared_again(  # type: ignore[no-untyped-def]
    kind: str, baseline: Path, sample: Path, demo_models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rewrite, logged = MANIFESTS[kind]
    out = _copy(baseline, tmp_path)
    path = out / WORK / "prepared.json"
    path.write_text(rewrite(json.loads(path.read_text())))
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    assert logged in caplog.text
    _assert_same_tables(out, baseline)
    run_input = json.loads((out / "run_info.json").read_text())["input"]
    assert run_input == json.loads((baseline / "run_info.json").read_text())["input"]


# -- a prepared file changed while the run goes on --------------------------------------------
class _DamageAfterPrepare:
    """Calls each step directly (the CLI's way) and damages a prepared file once the prepare step
    has returned: what the report step reads later is no longer what was prepared."""

    def __init__(self, damage) -> None:  # type: ignore[no-untyped-def]
        from virnucpro.pipeline.steps import DirectSteps

        self.direct = DirectSteps()
        self.damage = damage

    def run(self, step, *args):  # type: ignore[no-untyped-def]
        result = self.direct.run(step, *args)
        if step.name == "prepare":
            self.damage(result.paths.work_dir)
        return result

    def start(self, step, *args):  # type: ignore[no-untyped-def]
        return self.direct.start(step, *args)


def _edit_shard_during_run(work: Path) -> None:
    path = work / "shards" / "shard_000000.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[0].split("\t")
    fields[3] = ("C" if fields[3][0] != "C" else "G") + fields[3][1:]
    lines[0] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")


DURING = {
    "emptied_descriptions": (_empty_descriptions, "descriptions.tsv is 0 bytes, not the "),
    "edited_shard": (_edit_shard_during_run, "shards/shard_000000.tsv is not the file prepared"),
}


@pytest.mark.parametrize("kind", sorted(DURING))
def test_a_prepared_file_changed_during_a_run_stops_it_and_the_rerun_is_right(  # type: ignore[no-untyped-def]
    kind: str, baseline: Path, sample: Path, demo_models, tmp_path: Path
) -> None:
    from virnucpro.errors import OutputError
    from virnucpro.pipeline.prediction import run_prediction

    damage, named = DURING[kind]
    out = tmp_path / "out"
    config = cpu_config(sample, out, demo_models, shard_frames=8)
    with pytest.raises(OutputError, match="changed during this run") as caught:
        run_prediction(config, steps=_DamageAfterPrepare(damage))
    assert named in str(caught.value)
    assert not (out / "prediction_sequences.tsv").exists()  # nothing published
    result = _predict(sample, out, demo_models)
    assert result.exit_code == 0, result.output
    _assert_same_tables(out, baseline)
