"""Work files: shards keep IDs byte for byte (UTF-8); a feature, score or shard file that fails to
load is treated as missing (logged, removed, recomputed), never a crash; the work directory is
never a followed link."""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest

from virnucpro.domain.records import Frame, Strand
from virnucpro.errors import OutputError, WorkerError
from virnucpro.pipeline.shards import (
    check_work_dir,
    features_complete,
    iter_shard_ids,
    load_features,
    prepared_problem,
    read_shard,
    save_features,
    write_shard,
)

IDS = ["contig_é_chunk_1F1", "contig_é_chunk_1R2", "東京_chunk_1F3"]


def _frames() -> list[Frame]:
    return [
        Frame("contig_é", "contig_é_chunk_1", Strand.FORWARD, 0, "ACGTACG", "TY"),
        Frame("contig_é", "contig_é_chunk_1", Strand.REVERSE, 1, "CGTACGT", "RT"),
        Frame("東京", "東京_chunk_1", Strand.FORWARD, 2, "GTACGTA", "VR"),
    ]


def _npz_bytes(ids: list[str], emb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(ids, dtype=str), emb=emb)
    return buffer.getvalue()


def test_non_ascii_ids_round_trip_through_shards_and_feature_files(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "shards" / "shard_000000.tsv", 0, _frames())
    assert (shard.n_frames, shard.n_tokens) == (3, 12)
    frames = read_shard(shard.path)
    assert [f.frame_id for f in frames] == IDS == list(iter_shard_ids(shard.path))
    assert frames[2].record_id == "東京" and frames[0].chunk_id == "contig_é_chunk_1"
    assert shard.path.read_bytes().decode("utf-8").startswith("contig_é_chunk_1F1\tcontig_é\t")
    out = tmp_path / "features" / "shard_000000.npz"
    save_features(out, IDS, np.eye(3, dtype=np.float32))
    assert features_complete(out, IDS)
    assert load_features(out, IDS[::-1]).tolist() == np.eye(3)[::-1].tolist()


def _garbage_kinds() -> dict[str, bytes]:
    good = _npz_bytes(IDS, np.ones((3, 4), dtype=np.float32))
    npy = io.BytesIO()
    np.save(npy, np.ones(3))
    noisy = bytearray(good)
    rng = random.Random(0)
    for _ in range(40):
        noisy[rng.randrange(len(noisy))] = rng.randrange(256)
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "truncated_to_the_magic": good[:4],
        "random_bytes": bytes(rng.randrange(256) for _ in range(500)),
        "noisy": bytes(noisy),
        "npy_not_npz": npy.getvalue(),
        "text": b"ids,emb\n1,2\n",
        "wrong_keys": _npz_bytes(IDS, np.ones((3, 4))).replace(b"emb.npy", b"xyz.npy"),
        "wrong_ids": _npz_bytes(["a", "b", "c"], np.ones((3, 4), dtype=np.float32)),
        "one_row_short": _npz_bytes(IDS[:2], np.ones((2, 4), dtype=np.float32)),
        "not_finite": _npz_bytes(IDS, np.full((3, 4), np.nan, dtype=np.float32)),
        "strings_for_numbers": _npz_bytes(IDS, np.array([["x"] * 4] * 3)),
    }


@pytest.mark.parametrize("kind", sorted(_garbage_kinds()))
def test_a_bad_feature_file_is_missing_not_a_crash(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shard_000000.npz"
    path.write_bytes(_garbage_kinds()[kind])
    with pytest.raises(WorkerError, match=rf"^{path}: .*; delete the file to recompute it$"):
        load_features(path, IDS)
    with caplog.at_level(logging.WARNING, logger="virnucpro.pipeline.shards"):
        assert features_complete(path, IDS) is False
    assert not path.exists()  # removed: the stage recomputes it
    assert f"{path}: " in caplog.text and "recomputing it" in caplog.text


def test_every_truncation_of_a_feature_file_is_missing(tmp_path: Path) -> None:
    good = _npz_bytes(IDS, np.ones((3, 4), dtype=np.float32))
    path = tmp_path / "f.npz"
    for size in range(0, len(good), 7):
        path.write_bytes(good[:size])
        assert features_complete(path, IDS) is False, size
    assert features_complete(path, IDS) is False  # absent now: still just False


def test_a_garbage_shard_says_what_is_wrong(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "shard_000000.tsv", 0, _frames())
    records = tmp_path / "records.tsv"
    records.write_text("contig_é\t842\t2\n東京\t300\t1\n", encoding="utf-8")
    assert prepared_problem([shard], records, 2) is None
    assert prepared_problem([shard], records, 3) == f"{records} does not list the 3 prepared records"
    good = shard.path.read_bytes()
    shard.path.write_bytes(b"\xff\xfe" + os.urandom(200))
    with pytest.raises(WorkerError, match=rf"{shard.path}: not a frame shard: not UTF-8 text.*re-run"):
        read_shard(shard.path)
    assert prepared_problem([shard], records, 2).startswith(f"{shard.path}: not a frame shard")
    shard.path.write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(WorkerError, match=r"line 1 is not a frame row \(2 fields\)"):
        list(iter_shard_ids(shard.path))
    shard.path.write_bytes(good[: good.rindex(b"\n", 0, len(good) - 1) + 1])  # one frame lost
    assert "holds 2 frames (8 tokens), not the 3 (12) prepared" in prepared_problem([shard], records, 2)
    shard.path.unlink()
    assert prepared_problem([shard], records, 2) == f"{shard.path} is missing"
    records.unlink()
    assert prepared_problem([shard], records, 2) == f"{records} is missing"


def test_the_work_dir_is_never_a_followed_link(tmp_path: Path) -> None:
    work = tmp_path / "out" / ".virnucpro_work"
    check_work_dir(work)  # absent: fine
    work.mkdir(parents=True)
    check_work_dir(work)
    work.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    work.symlink_to(elsewhere)
    with pytest.raises(OutputError, match=rf"{work} is a symbolic link \(to {elsewhere}\).*rm {work}"):
        check_work_dir(work)
    work.unlink()
    work.write_text("a file")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        check_work_dir(work)
