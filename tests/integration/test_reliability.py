"""Reliability end to end through ``virnucpro predict`` with tiny demo models: non-ASCII IDs come
out unchanged; a damaged work file is recomputed and the outputs equal a clean run's byte for
byte; a full disk at each write site is exit 5 with a message (no traceback, no retries);
SIGTERM and Ctrl-C stop cleanly; the errors of odd inputs say what is wrong."""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.pipeline_helpers import (
    assert_same_tables,
    copy_run,
    proc_alive,
    finished_run_fixtures,
    write_sample,
)
from virnucpro.cli import cli
from virnucpro.domain import atomic

torch = pytest.importorskip("torch")

TABLES = ("prediction_results.txt", "prediction_results_highestscore.csv", "prediction_sequences.tsv")
ODD_IDS = ("contig_é", "東京_Ωμέγα")
REPO = Path(__file__).resolve().parents[2]


def _model_args(demo) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--dnabert-model", str(demo.dnabert), "--esm-model", str(demo.esm),
            "--classifier", str(demo.classifier(500))]


def _predict(sample: Path, out: Path, demo, *extra: str):  # type: ignore[no-untyped-def]
    args = ["predict", str(sample), "--output-dir", str(out), "--device", "cpu", "--shard-frames", "8",
            "--persistent-models", *_model_args(demo), *extra]
    return CliRunner().invoke(cli, args, obj={}, catch_exceptions=False)


@pytest.fixture(scope="module")
def sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real records; the first two renamed to non-ASCII IDs (one with a description)."""
    path = write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("rel") / "s.fa", 3)
    records = path.read_text().split(">")[1:]
    records[0] = f"{ODD_IDS[0]} Küste {records[0].split(maxsplit=1)[1]}"
    records[1] = f"{ODD_IDS[1]}\n{records[1].split(chr(10), 1)[1]}"
    path.write_text("".join(">" + r for r in records), encoding="utf-8")
    return path


baseline, rerun = finished_run_fixtures(_predict)


def _assert_same_tables(out: Path, baseline: Path) -> None:
    assert_same_tables(out, baseline, TABLES)


# -- item 2: IDs are whatever the FASTA holds --------------------------------------------------
def test_non_ascii_ids_come_out_unchanged_in_every_table(baseline: Path, sample: Path, tmp_path: Path) -> None:
    from virnucpro.domain.prepare import prepare_files

    prepared = prepare_files(sample, 500, tmp_path)  # the original's identified-frame records
    frame_ids = [line[1:].strip() for line in prepared.nucleotide.read_text(encoding="utf-8").splitlines()
                 if line.startswith(">")]
    rows = (baseline / "prediction_results.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == frame_ids
    assert any(i.startswith(f"{ODD_IDS[0]}_chunk_") for i in frame_ids)
    assert any(i.startswith(f"{ODD_IDS[1]}_chunk_") for i in frame_ids)
    chunks = (baseline / "prediction_results_highestscore.csv").read_text(encoding="utf-8").splitlines()
    assert {c.split("\t")[0].rsplit("_chunk_", 1)[0] for c in chunks[1:]} >= set(ODD_IDS)
    sequences = (baseline / "prediction_sequences.tsv").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in sequences[1:3]] == list(ODD_IDS)
    assert ODD_IDS[1] in (baseline / "report.html").read_text(encoding="utf-8")


# -- item 5: damaged work files are recomputed ---------------------------------------------------
def _truncate_feature(work: Path) -> None:
    path = work / "features" / "dnabert" / "shard_000001.npz"
    path.write_bytes(path.read_bytes()[:700])


def _empty_score(work: Path) -> None:
    (work / "scores" / "shard_000000.npz").write_bytes(b"")


def _garbage_shard(work: Path) -> None:
    (work / "shards" / "shard_000000.tsv").write_bytes(bytes(range(256)) * 8)


def _delete_records(work: Path) -> None:
    (work / "records.tsv").unlink()


DAMAGE = {
    "truncated_feature_npz": (_truncate_feature, "features/dnabert/shard_000001.npz: unreadable"),
    "empty_score_npz": (_empty_score, "scores/shard_000000.npz: unreadable (EOFError"),
    "garbage_shard": (_garbage_shard, "shards/shard_000000.tsv: not a frame shard: not UTF-8 text"),
    "deleted_records_tsv": (_delete_records, "records.tsv is missing; preparing"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_work_file_is_recomputed(kind: str, rerun, baseline: Path,  # type: ignore[no-untyped-def]
                                            caplog: pytest.LogCaptureFixture) -> None:
    damage, logged = DAMAGE[kind]
    out = rerun(damage, logging.WARNING)
    assert logged in caplog.text
    _assert_same_tables(out, baseline)


# -- a full disk ---------------------------------------------------------------------------------
def _disk_full_at(monkeypatch: pytest.MonkeyPatch, pattern: str) -> None:
    """Every atomic write to a path matching ``pattern`` fails with ENOSPC when it is flushed
    to disk (where a real full disk, or a quota on NFS, reports it)."""
    create, fsync = atomic._create_temp, os.fsync
    full: set[int] = set()

    def create_temp(path: Path):  # type: ignore[no-untyped-def]
        fd, temp = create(path)
        if fnmatch.fnmatch(str(path), pattern):
            full.add(fd)
        return fd, temp

    def fsync_or_full(fd: int) -> None:
        if fd in full:
            full.discard(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(atomic, "_create_temp", create_temp)
    monkeypatch.setattr(atomic.os, "fsync", fsync_or_full)


SITES = {  # site: (file pattern, starts from the finished baseline)
    "frame_shard": ("*/shards/shard_000001.tsv", False),
    "records_tsv": ("*/records.tsv", False),
    "manifest": ("*/prepared.json", False),
    "score_file": ("*/scores/shard_000000.npz", True),
    "prediction_results": ("*/prediction_results.txt", True),
    "highest_score": ("*/prediction_results_highestscore.csv", True),
    "sequence_table": ("*/prediction_sequences.tsv", True),
    "run_info": ("*/run_info.json", True),
    "report_html": ("*/report.html", True),
}


@pytest.mark.parametrize("site", sorted(SITES))
def test_a_full_disk_at_each_write_site_is_exit_5(  # type: ignore[no-untyped-def]
    site: str, baseline: Path, sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern, from_baseline = SITES[site]
    out = copy_run(baseline, tmp_path) if from_baseline else tmp_path / "out"
    if site == "score_file":
        shutil.rmtree(out / ".virnucpro_work" / "scores")
    _disk_full_at(monkeypatch, pattern)
    result = _predict(sample, out, demo_models)
    assert result.exit_code == 5, result.output
    assert "Error: DiskError: " in result.output and ": no space left on the device (" in result.output
    named = result.output.split("Error: DiskError: ", 1)[1].split(": no space left", 1)[0]
    assert fnmatch.fnmatch(named, pattern) and " free on /" in result.output
    assert "Traceback" not in result.output
    assert not [p for p in out.rglob(".*.tmp")]  # no partial file left
    if site == "prediction_results":  # space freed: the re-run resumes and finishes
        monkeypatch.undo()
        again = _predict(sample, out, demo_models)
        assert again.exit_code == 0, again.output
        _assert_same_tables(out, baseline)


def test_a_full_disk_in_a_worker_stops_the_run_without_retries(  # type: ignore[no-untyped-def]
    sample: Path, demo_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VIRNUCPRO_FAULTS", json.dumps({"disk_full": True}))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        result = _predict(sample, tmp_path / "out", demo_models)
    assert result.exit_code == 5, result.output
    assert "Error: DiskError: " in result.output and "/features/dnabert/shard_0000" in result.output
    assert ".npz: no space left on the device (" in result.output and "Traceback" not in result.output
    assert "retrying" not in caplog.text and "started worker" in caplog.text
    assert caplog.text.count("started worker") == 1  # the worker was not replaced either
    assert time.monotonic() - started < 120


def test_the_feature_tasks_do_not_retry_a_disk_error() -> None:
    from prefect.states import Failed

    from virnucpro.errors import DiskError, WorkerError
    from virnucpro.orchestration.tasks import STEP_TASKS, retry_unless_disk_error

    for feature_task in (STEP_TASKS["dnabert-features"], STEP_TASKS["esm-features"]):
        assert feature_task.retries == 1 and feature_task.retry_condition_fn is retry_unless_disk_error

    def retried(exc: BaseException) -> bool:  # the state Prefect's engine builds for a raise
        return retry_unless_disk_error(None, None, Failed(data=exc, message=repr(exc)))

    assert not retried(DiskError("/out/x.npz: no space left on the device", errno.ENOSPC))
    assert not retried(OSError(errno.EROFS, "Read-only file system"))
    assert retried(WorkerError("the worker pool was closed before this shard ran"))
    assert retried(OSError(errno.EIO, "Input/output error"))


# -- item 6: the errors say what is wrong --------------------------------------------------------
def test_a_directory_as_input_says_so(demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = _predict(tmp_path, tmp_path / "out", demo_models)
    assert result.exit_code == 2
    assert f"InputError: {tmp_path}: is a directory, not a FASTA file" in result.output


def test_a_nul_byte_in_a_late_header_names_the_line(demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "nul.fa"
    path.write_bytes(b">a\n" + b"ACGT" * 1500 + b"\n>contig\x00_2\nACGTACGT\n")
    result = _predict(path, tmp_path / "out", demo_models)
    assert result.exit_code == 2
    assert "nul.fa: line 3: the header holds a NUL byte (0x00) at column 8" in result.output


def test_a_work_dir_symlink_is_refused_and_never_followed(sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out, elsewhere = tmp_path / "out", tmp_path / "precious"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not VirNucPro's\n")
    (out / ".virnucpro_work").symlink_to(elsewhere)
    result = _predict(sample, out, demo_models)
    assert result.exit_code == 5
    assert f"OutputError: {out / '.virnucpro_work'} is a symbolic link" in result.output
    assert "Remove the link" in result.output and "Traceback" not in result.output
    assert os.listdir(elsewhere) == ["keep.txt"]


# -- signals -----------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start_and_signal(sample: Path, demo, out: Path, send) -> tuple[int, str, list[int], float]:  # type: ignore[no-untyped-def]
    """Run the CLI; once the first feature file exists (workers computing), ``send`` the signal.
    Return the exit code, stderr, the worker pids and the seconds from the signal to the exit."""
    err_path = out.parent / "stderr.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "virnucpro.cli", "predict", str(sample), "--output-dir", str(out),
           "--device", "cpu", "--shard-frames", "4", *_model_args(demo)]
    # as a terminal starts a foreground job: SIGINT at its default in the CLI. A test process that
    # was itself started in the background has SIGINT ignored, and a child inherits "ignored" (it
    # would rightly ignore the Ctrl-C); a handler here is reset to the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(err_path, "w") as err:
            process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=REPO,
                                       start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    features = out / ".virnucpro_work" / "features" / "dnabert"
    deadline = time.monotonic() + 120
    while not list(features.glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(process.pid)
    # the run must still be going: a machine too busy to see the first feature file in time
    # would signal a finished run (exit 0) and test nothing
    assert process.poll() is None, "the run ended before its first feature file was seen"
    sent = time.monotonic()
    send(process)
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return code, err_path.read_text(), workers, time.monotonic() - sent


def _gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while any(proc_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(proc_alive(p) for p in pids)


@pytest.fixture(scope="module")
def long_sample(golden_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(golden_tiny_dir / "shared_real.fa", tmp_path_factory.mktemp("long") / "l.fa", 20)


def test_sigterm_stops_like_ctrl_c(long_sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    code, stderr, workers, seconds = _start_and_signal(
        long_sample, demo_models, out, lambda p: p.send_signal(signal.SIGTERM)
    )
    assert code == 143, stderr
    assert stderr.count("Terminated (SIGTERM): the workers were stopped") == 1
    assert "Traceback" not in stderr
    assert workers and _gone(workers) and seconds < 15
    assert not list(out.rglob(".*.tmp"))  # no partial feature file
    assert not (out / "prediction_results.txt").exists()


def test_ctrl_c_gives_no_worker_traceback(long_sample: Path, demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    code, stderr, workers, seconds = _start_and_signal(  # a terminal sends SIGINT to the whole group
        long_sample, demo_models, out, lambda p: os.killpg(p.pid, signal.SIGINT)
    )
    assert code == 130, stderr
    assert stderr.count("Interrupted; finished shards are kept") == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert workers and _gone(workers) and seconds < 15
