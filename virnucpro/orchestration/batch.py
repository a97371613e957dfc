"""A nightly batch: which inbox samples still need a run (by content, not name), and what happened.

A sample's output directory is ``<outbox>/<stem>-<sha256[:12]>``; it is finished when its DONE
marker (written last by the pipeline) holds the sample's full SHA-256. Any output directory of the
outbox counts, so a renamed copy of a finished sample is recognised as finished; two inbox files
with the same content are run once. Files whose name starts with ``.`` are ignored, so copy
samples in under a hidden name and rename them when complete.

:class:`SampleOutcome`, :class:`BatchRecord` and :class:`NightReport` record the night;
:func:`write_night_report` writes ``<outbox>/nightly-<date>-<run>.json`` (one file per night run:
a second run the same day does not overwrite the first). Framework-free (no prefect): the nightly
flow wraps :func:`scan_inbox` in a task and publishes the report as an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.checksums import sha256_file
from virnucpro.domain.outputs import OutputPaths, input_stem
from virnucpro.errors import ConfigError

__all__ = [
    "DEFAULT_PATTERNS",
    "Sample",
    "InboxScan",
    "sample_output_dir",
    "is_finished",
    "finished_outputs",
    "scan_inbox",
    "Status",
    "STATUSES",
    "SampleOutcome",
    "BatchRecord",
    "NightReport",
    "outcome_from_outputs",
    "write_night_report",
]

DEFAULT_PATTERNS: tuple[str, ...] = tuple(
    f"*{ext}{gz}" for gz in ("", ".gz") for ext in (".fa", ".fasta", ".fna", ".fas", ".ffn")
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One inbox file, its content hash and the output directory it gets."""

    path: Path
    sha256: str
    output_dir: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class InboxScan:
    """The inbox sorted into work to do and work already done."""

    pending: tuple[Sample, ...]
    finished: tuple[tuple[Sample, Path], ...]  # (sample, the output directory that finished it)
    duplicates: tuple[tuple[Sample, Sample], ...]  # (sample, the pending sample with its content)


def sample_output_dir(outbox: Path, path: Path, sha256: str) -> Path:
    """``<outbox>/<stem>-<sha256[:12]>``: one directory per distinct content and name."""
    return Path(outbox) / f"{input_stem(path)}-{sha256[:12]}"


def _done_hash(output_dir: Path) -> str | None:
    try:
        return OutputPaths.for_dir(output_dir).done_marker.read_text().strip() or None
    except OSError:
        return None


def is_finished(sample: Sample) -> bool:
    """The sample's own output directory holds its DONE marker (with its content's hash)."""
    return _done_hash(sample.output_dir) == sample.sha256


def finished_outputs(outbox: Path) -> dict[str, Path]:
    """SHA-256 → output directory, for every finished output directory in ``outbox``."""
    found: dict[str, Path] = {}
    if not Path(outbox).is_dir():
        return found
    for child in sorted(Path(outbox).iterdir()):
        if child.is_dir() and (digest := _done_hash(child)) is not None:
            found.setdefault(digest, child)
    return found


def _inbox_files(inbox: Path, patterns: Sequence[str]) -> list[Path]:
    files: set[Path] = set()
    for pattern in patterns:
        files.update(p for p in inbox.glob(pattern) if p.is_file() and not p.name.startswith("."))
    return sorted(files)


def scan_inbox(inbox: Path, outbox: Path, patterns: Iterable[str] = DEFAULT_PATTERNS) -> InboxScan:
    """Hash every matching inbox file and sort it into pending, finished and duplicate."""
    inbox, outbox = Path(inbox), Path(outbox)
    if not inbox.is_dir():
        raise ConfigError(f"inbox {inbox} is not a directory; create it or pass the right inbox")
    if outbox.exists() and not outbox.is_dir():
        raise ConfigError(f"outbox {outbox} exists and is not a directory; pass another outbox")
    patterns = tuple(patterns)
    if not patterns:
        raise ConfigError("no file patterns given; pass e.g. ['*.fa', '*.fa.gz']")
    done = finished_outputs(outbox)
    pending: list[Sample] = []
    finished: list[tuple[Sample, Path]] = []
    duplicates: list[tuple[Sample, Sample]] = []
    first_of: dict[str, Sample] = {}
    for path in _inbox_files(inbox, patterns):
        digest = sha256_file(path)
        sample = Sample(path, digest, sample_output_dir(outbox, path, digest))
        if digest in done:
            finished.append((sample, done[digest]))
        elif digest in first_of:
            duplicates.append((sample, first_of[digest]))
        else:
            first_of[digest] = sample
            pending.append(sample)
    return InboxScan(tuple(pending), tuple(finished), tuple(duplicates))


# -- what happened --------------------------------------------------------------------------
Status = Literal["done", "failed", "missing", "already-done", "duplicate"]
STATUSES: tuple[Status, ...] = ("done", "failed", "missing", "already-done", "duplicate")
"""``failed``: the sample's own run failed (e.g. bad input); ``missing``: no run finished it (its
runs were lost past the re-dispatch limit, or the night timed out). Both fail the night."""


@dataclass(frozen=True, slots=True)
class SampleOutcome:
    """One inbox file's fate this night."""

    file: str
    sha256: str
    status: Status
    output_dir: str
    flow_run_id: str | None = None
    batch_run: str | None = None  # the batch run that ran it (dispatched nights)
    records: int | None = None
    frames: int | None = None
    calls: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    demo_models: bool = False
    error: str | None = None
    settings_changed: tuple[str, ...] = ()  # already-done, with outputs of other settings than tonight's


def outcome_from_outputs(
    sample: Sample,
    status: Status,
    output_dir: Path | None = None,
    flow_run_id: str | None = None,
    error: str | None = None,
    batch_run: str | None = None,
) -> SampleOutcome:
    """An outcome with the counts and calls read from the output's ``run_info.json`` (if any)."""
    out = Path(output_dir) if output_dir is not None else sample.output_dir
    try:
        info: dict[str, Any] = json.loads(OutputPaths.for_dir(out).run_info.read_text())
    except (OSError, ValueError):
        info = {}
    seconds = (info.get("timings_seconds") or {}).get("total")
    return SampleOutcome(
        file=str(sample.path),
        sha256=sample.sha256,
        status=status,
        output_dir=str(out),
        flow_run_id=flow_run_id,
        batch_run=batch_run,
        records=(info.get("input") or {}).get("records"),
        frames=(info.get("input") or {}).get("frames"),
        calls=dict((info.get("report") or {}).get("sequence_calls") or {}),
        seconds=seconds if status == "done" else None,
        demo_models=bool(info.get("demo_models", False)),
        error=error,
    )


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch run a dispatched night made: where it ran, what it got, how it ended."""

    name: str
    flow_run_id: str
    work_queue: str
    attempt: int
    samples: tuple[str, ...]  # file names, largest first
    state: str
    message: str | None = None
    model_loads: dict[str, dict[str, int]] = field(default_factory=dict)  # per pool worker


@dataclass(frozen=True, slots=True)
class NightReport:
    """The whole night: settings, every sample's outcome, and the worker pool's model loads."""

    date: str
    started: str
    finished: str
    inbox: str
    outbox: str
    mode: str  # "persistent pool", "per-stage workers" or "dispatched to <deployment>"
    samples: tuple[SampleOutcome, ...]
    model_loads: dict[str, dict[str, int]] = field(default_factory=dict)
    pools_opened: int = 0
    flow_run_id: str | None = None
    batches: tuple[BatchRecord, ...] = ()
    notes: tuple[str, ...] = ()  # warnings of the night run (e.g. a code-version mismatch)

    def count(self, status: Status) -> int:
        return sum(1 for s in self.samples if s.status == status)

    @property
    def failed(self) -> tuple[SampleOutcome, ...]:
        """Samples the night did not finish: failed or missing."""
        return tuple(s for s in self.samples if s.status in ("failed", "missing"))

    @property
    def path_name(self) -> str:
        """``nightly-<date>-<first 8 of the flow run id>.json`` (``nightly-<date>.json`` outside
        a flow run)."""
        run = f"-{self.flow_run_id[:8]}" if self.flow_run_id else ""
        return f"nightly-{self.date}{run}.json"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = {s: self.count(s) for s in STATUSES}
        return data


def write_night_report(report: NightReport) -> Path:
    """Write ``<outbox>/<report.path_name>`` atomically (one file per night run)."""
    path = Path(report.outbox) / report.path_name
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return path
