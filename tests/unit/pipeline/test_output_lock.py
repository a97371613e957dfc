"""The output directory's lock: one holder at a time, no symlink followed, nothing left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from virnucpro.errors import OutputError
from virnucpro.pipeline.output_lock import output_lock

LOCK = ".virnucpro.lock"


def test_the_lock_file_exists_only_while_held(tmp_path: Path) -> None:
    with output_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
        (tmp_path / "prediction_results.txt").write_text("result\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction_results.txt"]


def test_a_directory_the_run_created_is_removed_when_left_empty(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError, match="no models"):
        with output_lock(out):
            assert out.is_dir()
            raise RuntimeError("no models")
    assert list(tmp_path.iterdir()) == []  # both levels it made are gone


def test_a_directory_that_existed_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    with output_lock(out):
        pass
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_created_directory_with_outputs_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(RuntimeError):
        with output_lock(out):
            (out / ".virnucpro_work").mkdir()  # resumable work of a failed run stays
            raise RuntimeError("worker died")
    assert [p.name for p in out.iterdir()] == [".virnucpro_work"]


def test_a_symlink_at_the_lock_path_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK).symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        with output_lock(out):
            pass
    assert victim.read_text() == "precious\n"
    assert (out / LOCK).is_symlink()


def test_a_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    with output_lock(tmp_path):
        with pytest.raises(OutputError, match=f"another VirNucPro run \\(pid {os.getpid()}\\)"):
            with output_lock(tmp_path):
                pass
        assert (tmp_path / LOCK).exists()  # the refused run did not remove the holder's lock
    with output_lock(tmp_path):  # free again
        pass


def test_a_stale_lock_file_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text("99999\n")  # nobody holds it
    with output_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / LOCK).exists()


def test_never_two_holders_while_runs_come_and_go(tmp_path: Path) -> None:
    """Many runs racing for one (not yet existing) directory: each holder must be alone, though
    holders remove the lock file (and the empty directory) as they finish."""
    out = tmp_path / "o"
    overlaps: list[str] = []
    held = [0]
    errors: list[BaseException] = []

    def run() -> None:
        for _ in range(150):
            try:
                with output_lock(out):
                    try:
                        fd = os.open(out / "holder", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        overlaps.append("two holders at once")
                        continue
                    held[0] += 1
                    os.close(fd)
                    os.unlink(out / "holder")
            except OutputError as exc:
                if "another VirNucPro run" not in str(exc):
                    errors.append(exc)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and overlaps == []
    assert held[0] > 0
    assert not out.exists() or list(out.iterdir()) == []  # no lock file left behind
