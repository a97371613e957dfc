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
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.pipeline_helpers import (
    assert_same_tables,
    copy_run,
    cpu_config,
    finished_run_fixtures,
    write_sample,
)
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


baseline, rerun = finished_run_fixtures(_predict)


def _descriptions(out: Path) -> list[str]:
    rows = (out / "prediction_sequences.tsv").read_text(encoding="utf-8").splitlines()
    return [row.split("\t")[-1] for row in rows[1:]]


def test_the_baseline_has_every_description(baseline: Path) -> None:
    assert _descriptions(baseline) == ["CP003225.1:74269-77648(+) len=3380",
                                       "CP003200.1:2882450-2883291(-) len=842 Küste",
                                       "NC_006494.1:6176-8413(-) len=2238"]


def _assert_same_tables(out: Path, baseline: Path) -> None:
    assert_same_tables(out, baseline, TABLES)


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


def _edit_shard_during_run(work: Path) -> None:
    """One base of the first shard's first frame's DNA changed (same frames, same tokens)."""
    path = work / "shards" / "shard_000000.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[0].split("\t")
    fields[3] = ("C" if fields[3][0] != "C" else "G") + fields[3][1:]
    lines[0] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")


def _edit_shard_dna(work: Path) -> None:
    """The shard edited as above, and that shard's DNABERT-S features and scores removed, so a
    run computes them from the shard again."""
    _edit_shard_during_run(work)
    (work / "features" / "dnabert" / "shard_000000.npz").unlink()
    (work / "scores" / "shard_000000.npz").unlink()


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


def _rewriting(rewrite):  # type: ignore[no-untyped-def]
    """A change of the work directory that rewrites its prepared.json with ``rewrite``."""
    def change(work: Path) -> None:
        path = work / "prepared.json"
        path.write_text(rewrite(json.loads(path.read_text())))
    return change


AGAIN = ("preparing", "again")
CHANGES = {  # kind: (the change of the finished run's work directory, what one warning says)
    "emptied_descriptions": (_empty_descriptions, ("descriptions.tsv is 0 bytes, not the ", *AGAIN)),
    "deleted_descriptions": (_delete_descriptions, ("descriptions.tsv is missing", *AGAIN)),
    "truncated_descriptions": (_truncate_descriptions, ("descriptions.tsv is ", *AGAIN)),
    "edited_records": (_edit_records, ("records.tsv is not the file prepared (its SHA-256 changed", *AGAIN)),
    "edited_shard": (_edit_shard_dna, ("shards/shard_000000.tsv is not the file prepared", *AGAIN)),
    "wrong_chunk_count": (_rewriting(_wrong_chunk_count), ("chunks and ", *AGAIN)),
    "manifest_not_an_object": (_rewriting(_not_an_object), ("prepared.json is not a preparation record",)),
    "manifest_bad_shard_list": (_rewriting(_bad_shard_list), ("prepared.json is malformed", *AGAIN)),
    "manifest_bad_files": (_rewriting(_bad_files), ("prepared.json is malformed", *AGAIN)),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_a_changed_preparation_is_prepared_again(  # type: ignore[no-untyped-def]
    kind: str, rerun, baseline: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prepared file or prepared.json changed since the run: the resumed run says which and
    why, prepares again, and its outputs are the clean run's (descriptions and input record too)."""
    change, said = CHANGES[kind]
    out = rerun(change)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(all(part in m for part in said) for m in warnings), warnings
    assert "reusing the preparation" not in caplog.text
    _assert_same_tables(out, baseline)
    assert _descriptions(out) == _descriptions(baseline)
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
