"""prepared.json: every prepared file's size and SHA-256 recorded as written, and a preparation
reusable only while each file is the one prepared; a malformed manifest is an error naming what
is wrong, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.records import Frame, Strand
from virnucpro.pipeline.prepared_manifest import (
    ManifestError,
    PreparedManifest,
    PrepareKey,
    changed_files,
    read_manifest,
)
from virnucpro.pipeline.shards import write_shard
from virnucpro.pipeline.tracks import write_descriptions

KEY = PrepareKey("ab" * 32, 500, 8)


def _prepare(tmp_path: Path) -> tuple[OutputPaths, PreparedManifest]:
    paths = OutputPaths.for_dir(tmp_path / "out")
    frames = [Frame("contig_é", "contig_é_chunk_1", Strand.FORWARD, 0, "ACGTACG", "TY"),
              Frame("東京", "東京_chunk_1", Strand.FORWARD, 1, "GTACGTA", "VR")]
    shard = write_shard(paths.shards_dir / "shard_000000.tsv", 0, frames)
    paths.records.write_text("contig_é\t7\t1\n東京\t7\t1\n", encoding="utf-8")
    write_descriptions(paths.descriptions, [("contig_é", "Küste"), ("東京", "")])
    manifest = PreparedManifest.of_written(paths, KEY, Path("s.fa"), 2, 2, 2, [shard])
    manifest.write(paths.manifest)
    return paths, manifest


def test_a_written_manifest_reads_back_and_is_reusable(tmp_path: Path) -> None:
    paths, manifest = _prepare(tmp_path)
    data = read_manifest(paths.manifest)
    assert data is not None and KEY.matches(data)
    assert not PrepareKey("cd" * 32, 500, 8).matches(data) and not PrepareKey("ab" * 32, 300, 8).matches(data)
    assert PreparedManifest.from_dict(data, paths) == manifest
    assert sorted(data["files"]) == ["descriptions.tsv", "records.tsv", "shards/shard_000000.tsv"]
    assert data["files"]["descriptions.tsv"]["size"] == len("contig_é\tKüste\n".encode())
    assert manifest.problem(paths) is None


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.descriptions.write_bytes(b""), "descriptions.tsv is 0 bytes, not the 17 prepared (emptied"),
    (lambda p: p.descriptions.unlink(), "descriptions.tsv is missing"),
    (lambda p: p.descriptions.write_bytes("contig_é\tKü".encode()), "descriptions.tsv is 13 bytes, not the 17"),
    (lambda p: p.descriptions.write_text("contig_é\tKuste\n", encoding="utf-8"), "descriptions.tsv is 16 bytes"),
    (lambda p: p.descriptions.write_text("contig_é\tKüstE\n", encoding="utf-8"),
     "descriptions.tsv is not the file prepared (its SHA-256 changed since; same size)"),
    (lambda p: p.records.write_text("contig_é\t8\t1\n東京\t7\t1\n", encoding="utf-8"),
     "records.tsv is not the file prepared (its SHA-256 changed"),
    (lambda p: (p.shards_dir / "shard_000000.tsv").write_text(
        (p.shards_dir / "shard_000000.tsv").read_text(encoding="utf-8").replace("ACGTACG", "ACGTACC"),
        encoding="utf-8"), "shards/shard_000000.tsv is not the file prepared"),
])
def test_a_file_changed_since_it_was_prepared_is_named(tmp_path: Path, damage, why: str) -> None:  # type: ignore[no-untyped-def]
    paths, manifest = _prepare(tmp_path)
    damage(paths)
    problem = manifest.problem(paths)
    assert problem is not None and why in problem
    assert problem.startswith(str(paths.work_dir))  # the file's full path
    assert [path for path, _ in changed_files(paths, manifest.shards, manifest.files)] == [
        Path(problem.split(" is ", 1)[0])
    ]


def test_a_manifest_without_digests_is_not_reusable(tmp_path: Path) -> None:
    """A work directory of a version before the digests (and before descriptions.tsv)."""
    paths, manifest = _prepare(tmp_path)
    data = json.loads(paths.manifest.read_text())
    del data["files"]
    paths.descriptions.unlink()
    old = PreparedManifest.from_dict(data, paths)
    assert old.files == ()
    assert old.problem(paths) == (f"{paths.manifest} records no size and SHA-256 of the prepared files "
                                  "(written by an earlier version)")


def test_a_file_the_manifest_does_not_list_is_named(tmp_path: Path) -> None:
    paths, manifest = _prepare(tmp_path)
    partial = tuple((name, d) for name, d in manifest.files if name != "descriptions.tsv")
    assert changed_files(paths, manifest.shards, partial) == [
        (paths.descriptions, f"{paths.manifest} records no size and SHA-256 of {paths.descriptions}")
    ]


@pytest.mark.parametrize("change, why", [
    (lambda d: d.pop("shards"), "KeyError: 'shards'"),
    (lambda d: d.update(shards=[{"file": 3}]), "KeyError"),
    (lambda d: d.update(shards=[{"shard_id": 0, "file": "../../x.tsv", "n_frames": 2, "n_tokens": 8}]),
     "'../../x.tsv' is not a shard file name"),
    (lambda d: d.update(n_records="2"), "'2' is not a count"),
    (lambda d: d.update(files={"records.tsv": "junk"}), "TypeError"),
    (lambda d: d.update(files={"records.tsv": {"size": 3, "sha256": "XYZ"}}), "'XYZ' is not a SHA-256"),
    (lambda d: d.update(files=[]), "AttributeError"),
])
def test_a_malformed_manifest_says_what_is_wrong(tmp_path: Path, change, why: str) -> None:  # type: ignore[no-untyped-def]
    paths, _ = _prepare(tmp_path)
    data = json.loads(paths.manifest.read_text())
    change(data)
    with pytest.raises(ManifestError, match=why.replace("(", r"\(").replace(".", r"\.")):
        PreparedManifest.from_dict(data, paths)


def test_read_manifest_tells_none_from_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "prepared.json"
    assert read_manifest(path) is None
    path.write_text("[]")
    with pytest.raises(ManifestError, match="a JSON list, not an object"):
        read_manifest(path)
    path.write_text('{"input_sha256": ')
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ManifestError, match="unreadable"):
        read_manifest(path)


def test_counts_that_are_not_the_files_are_named(tmp_path: Path) -> None:
    from dataclasses import replace

    paths, manifest = _prepare(tmp_path)
    assert replace(manifest, n_chunks=3).problem(paths) == (
        f"{paths.manifest} counts 3 chunks and 2 frames, but its files hold 2 and 2")
    assert "counts 2 chunks and 5 frames" in replace(manifest, n_frames=5).problem(paths)
