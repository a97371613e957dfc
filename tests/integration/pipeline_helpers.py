"""Small helpers shared by the pipeline integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from virnucpro.config import DeviceKind, ModelPaths, RunConfig
from virnucpro.domain.outputs import OutputPaths

__all__ = [
    "SAMPLE_RECORDS", "SHARD_FRAMES", "write_sample", "cpu_config", "feature_matrix", "read_text", "proc_alive", "model_args",
    "CliRun", "invoke_cli", "run_cli_process", "captured_logs", "copy_features", "copy_run",
    "assert_same_tables", "rerun_changed", "finished_run_fixtures",
]

SAMPLE_RECORDS = 16  # the session's sample: 38 frames, 5 shards of 8 (resume, faults, batches)
SHARD_FRAMES = 8


def write_sample(source: Path, out: Path, n_records: int, gz: bool = False) -> Path:
    """The first ``n_records`` records of a FASTA file, as a new (optionally gzipped) file."""
    text = source.read_text()
    records = [">" + r for r in text.split(">")[1:]][:n_records]
    data = "".join(records)
    if gz:
        with gzip.open(out, "wt") as handle:
            handle.write(data)
    else:
        out.write_text(data)
    return out


def cpu_config(input_fasta: Path, output_dir: Path, demo, **overrides) -> RunConfig:  # type: ignore[no-untyped-def]
    values = dict(
        input_fasta=input_fasta,
        output_dir=output_dir,
        chunk_length=500,
        models=ModelPaths(dnabert=demo.dnabert, esm=demo.esm, classifier=demo.classifier(500)),
        device=DeviceKind.CPU,
    )
    values.update(overrides)
    return RunConfig(**values)


def model_args(demo, chunk: int = 500) -> list[str]:  # type: ignore[no-untyped-def]
    """``virnucpro predict``'s model options for the demo models."""
    return ["--dnabert-model", str(demo.dnabert), "--esm-model", str(demo.esm),
            "--classifier", str(demo.classifier(chunk))]


def feature_matrix(output_dir: Path, stage: str) -> dict[str, np.ndarray]:
    """Every frame's embedding of one stage, keyed by frame ID."""
    out: dict[str, np.ndarray] = {}
    for path in sorted((output_dir / ".virnucpro_work" / "features" / stage).glob("*.npz")):
        with np.load(path) as data:
            for frame_id, row in zip(data["ids"], data["emb"]):
                out[str(frame_id)] = row
    return out


def read_text(path: Path) -> str:
    return path.read_text()


def proc_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every log record (DEBUG and up, any logger) emitted in the block, as pytest's ``caplog``
    at DEBUG would see them; usable where ``caplog`` is not (session and module fixtures)."""
    handler, root = _Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliRun:
    """One ``virnucpro`` invocation: its exit code, output, logs and output directory."""

    args: tuple[str, ...]
    exit_code: int
    output: str
    log: str
    output_dir: Path

    @property
    def info(self) -> dict:
        return json.loads((self.output_dir / "run_info.json").read_text())


def invoke_cli(args: Sequence[str], output_dir: Path) -> CliRun:
    """``virnucpro ARGS`` through click's CliRunner, logs captured; ``output_dir`` is where the
    run is expected to write (given in ``args`` or the default one)."""
    from click.testing import CliRunner

    from virnucpro.cli import cli

    with captured_logs() as lines:
        result = CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)
    return CliRun(tuple(args), result.exit_code, result.output, "\n".join(lines), output_dir)


def run_cli_process(args: Sequence[str], cwd: Path, output_dir: Path) -> CliRun:
    """``python -m virnucpro.cli ARGS`` in ``cwd``, as users run it; ``log`` is its stderr (the
    CLI's logging goes there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "virnucpro.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    return CliRun(tuple(args), done.returncode, done.stdout + done.stderr, done.stderr, output_dir)


def copy_features(source_dir: Path, target_dir: Path) -> Path:
    """A new output directory holding ``source_dir``'s prepared shards and both stages' features,
    without scores, outputs or DONE marker: a run there with the same input, chunk length and
    shard size skips both feature stages (no worker starts) and classifies for real."""
    source, target = OutputPaths.for_dir(source_dir), OutputPaths.for_dir(target_dir)
    shutil.copytree(source.work_dir, target.work_dir,
                    ignore=shutil.ignore_patterns(source.scores_dir.name, source.staging_dir.name,
                                                  source.done_marker.name))
    return target_dir


def copy_run(finished: Path, tmp_path: Path) -> Path:
    """A copy of a finished run's output directory (outputs and work), as ``tmp_path/out``."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def assert_same_tables(out: Path, expected: Path, names: Sequence[str]) -> None:
    """Each named table in ``out`` is byte for byte the one in ``expected``."""
    for name in names:
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name


def rerun_changed(finished: Path, tmp_path: Path, change: Callable[[Path], None] | None,
                  run: Callable[[Path], object], caplog, level: int = logging.INFO) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the finished run, changed by ``change`` (given the copy's work directory; None:
    left as it is), run again by ``run`` (given the copy) with virnucpro's logs at ``level`` in ``caplog``: the run
    must succeed; returns the copy."""
    out = copy_run(finished, tmp_path)
    if change is not None:
        change(OutputPaths.for_dir(out).work_dir)
    with caplog.at_level(level, logger="virnucpro"):
        result = run(out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return out


def finished_run_fixtures(predict: Callable[[Path, Path, object], object]):  # type: ignore[no-untyped-def]
    """A test module's ``baseline`` (one finished ``predict(sample, out, demo_models)`` run, once
    per module) and ``rerun`` fixtures (``rerun(change, level=INFO)``: :func:`rerun_changed` on a
    copy of it, run again by the same ``predict``). Assign both at module level."""

    @pytest.fixture(scope="module")
    def baseline(sample: Path, demo_models, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
        out = tmp_path_factory.mktemp("baseline")
        result = predict(sample, out, demo_models)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        return out

    @pytest.fixture
    def rerun(baseline: Path, sample: Path, demo_models, tmp_path: Path, caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
        return lambda change, level=logging.INFO: rerun_changed(
            baseline, tmp_path, change, lambda out: predict(sample, out, demo_models), caplog, level)

    return baseline, rerun
