"""Prefect artifacts of a run: the GPU memory table, the markdown summaries, the report link.

Keys are per sample (``<kind>-<sample>``, slugged to Prefect's key rules by
:func:`artifact_key`), so the Artifacts page shows one card per sample, each with its history:

- ``gpu-memory-checkpoints-<sample>`` (table): one row per device per memory checkpoint
  (checkpoint, device, used/total MiB, per-process MiB, torch peak per worker); on a machine
  without NVML one row per checkpoint saying "NVML unavailable: <why>".
- ``prediction-summary-<sample>`` (markdown): counts, calls, throughput per stage, timings,
  memory, model checksums (the run's :class:`~virnucpro.pipeline.run_info.RunInfo`), output paths,
  a loud warning when demo models were used and any note of the run (e.g. a code-version mismatch).
- ``report-<sample>`` (link): the run's ``report.html``.
- ``nightly-summary`` (markdown): one row per sample of a nightly batch (and one per batch run).

Tables are kept narrow enough for the artifact page (few columns; long values such as SHA-256s
and paths go in lists below them); empty cells are written ``—``, never ``-`` (which the UI renders
as a list bullet).

The ``*_rows``/``*_markdown`` functions are pure (testable without Prefect); ``publish_*`` create
the artifacts in the current flow or task run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from virnucpro.domain.outputs import input_stem
from virnucpro.orchestration.batch import STATUSES, NightReport, SampleOutcome
from virnucpro.pipeline.memory import MemoryCheckpoint
from virnucpro.pipeline.finalize import PredictionResult

__all__ = [
    "artifact_key",
    "sample_key",
    "REPORT_ARTIFACT_KEY",
    "MEMORY_ARTIFACT_KEY",
    "SUMMARY_ARTIFACT_KEY",
    "NIGHTLY_ARTIFACT_KEY",
    "MEMORY_COLUMNS",
    "DEMO_WARNING",
    "memory_table_rows",
    "summary_markdown",
    "publish_memory_checkpoints",
    "publish_prediction_summary",
    "publish_report_link",
    "batch_markdown",
    "nightly_markdown",
    "publish_nightly_summary",
]

MEMORY_ARTIFACT_KEY = "gpu-memory-checkpoints"
SUMMARY_ARTIFACT_KEY = "prediction-summary"
REPORT_ARTIFACT_KEY = "report"
NIGHTLY_ARTIFACT_KEY = "nightly-summary"
"""Key prefixes; a run's artifacts are keyed ``<prefix>-<sample>`` (:func:`sample_key`)."""

MEMORY_COLUMNS = (
    "checkpoint", "device", "used_mib", "total_mib", "process_mib", "worker_peak_mib", "note",
)
EMPTY = "\u2014"
"""An empty cell (an em dash: a lone ``-`` renders as a list bullet in the UI)."""
DEMO_WARNING = (
    "DEMO MODELS WITH RANDOM WEIGHTS: every call of this run is meaningless. "
    "Install the real DNABERT-S, ESM-2 and classifier weights (see README) and re-run."
)
"""The flow's words for a demo run (run_info.json's own is ``run_info.DEMO_WARNING``)."""
_KEY_MAX = 100


def artifact_key(prefix: str, sample: str) -> str:
    """``<prefix>-<sample>`` in Prefect's key alphabet (lowercase letters, digits, dashes):
    ``artifact_key("prediction-summary", "Sample_1.fa")`` is ``prediction-summary-sample-1-fa``."""
    slug = re.sub(r"[^a-z0-9]+", "-", sample.lower()).strip("-") or "sample"
    return f"{prefix}-{slug}"[:_KEY_MAX].rstrip("-")


def sample_key(prefix: str, input_path: Path | str) -> str:
    """The key of a sample's artifact: the prefix and the input's name without its FASTA/gzip
    extensions (``/data/S1.fa.gz`` → ``prediction-summary-s1``)."""
    return artifact_key(prefix, input_stem(input_path))


def _mib(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _peaks_text(peaks: Mapping[str, float]) -> str:
    return "; ".join(f"{worker}: {mib:.1f}" for worker, mib in sorted(peaks.items())) or EMPTY


# -- memory ---------------------------------------------------------------------------------
def memory_table_rows(checkpoints: Iterable[MemoryCheckpoint]) -> list[dict[str, Any]]:
    """One row per device per checkpoint; a "NVML unavailable" row when no device was read."""
    rows: list[dict[str, Any]] = []
    for cp in checkpoints:
        common = {"checkpoint": cp.name, "worker_peak_mib": _peaks_text(cp.worker_peaks_mib)}
        if not cp.devices:
            rows.append({**common, "device": EMPTY, "used_mib": None, "total_mib": None,
                         "process_mib": EMPTY, "note": cp.note or "no device memory was read"})
            continue
        for dev in cp.devices:
            processes = "; ".join(f"pid {p.pid}: {p.used_mib:.0f}" for p in dev.processes) or EMPTY
            rows.append({**common, "device": f"{dev.index}: {dev.name}", "used_mib": _mib(dev.used_mib),
                         "total_mib": _mib(dev.total_mib), "process_mib": processes,
                         "note": cp.note or ""})
    return [{column: row[column] for column in MEMORY_COLUMNS} for row in rows]


def publish_memory_checkpoints(checkpoints: Sequence[MemoryCheckpoint], input_path: Path | str) -> UUID:
    """Create the ``gpu-memory-checkpoints-<sample>`` table artifact of the current run."""
    return create_table_artifact(
        table=memory_table_rows(checkpoints), key=sample_key(MEMORY_ARTIFACT_KEY, input_path),
        description=f"Device memory (NVML) at each checkpoint, MiB, {Path(input_path).name}",
    )


# -- prediction summary --------------------------------------------------------------------
def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return EMPTY
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value).replace("|", "\\|")


def _loads_text(loads: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{w}: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))
                     for w, counts in sorted(loads.items())) or EMPTY


def _throughput_table(result: PredictionResult) -> str:
    """Stages as columns, measures as rows: three columns fit the artifact page."""
    stages = result.stages
    measures: list[tuple[str, list[Any]]] = [
        ("workers", ["persistent" if s.persistent else "per stage" for s in stages]),
        ("shards (skipped)", [f"{s.shards_total} ({s.shards_skipped})" for s in stages]),
        ("frames", [s.frames for s in stages]),
        ("tokens", [s.tokens for s in stages]),
        ("seconds", [s.seconds for s in stages]),
        ("frames/s", [s.frames_per_s for s in stages]),
        ("tokens/s", [s.tokens_per_s for s in stages]),
        ("pool start s", [s.pool_start_seconds for s in stages]),
        ("model loads", [_loads_text(s.model_loads) for s in stages]),
        ("restarts", [s.worker_restarts for s in stages]),
        ("OOM retries", [s.oom_retries for s in stages]),
    ]
    return _table(["", *(s.stage.label for s in stages)], [[name, *values] for name, values in measures])


def summary_markdown(result: PredictionResult, notes: Sequence[str] = ()) -> str:
    """The ``prediction-summary`` text of one run; ``notes`` (warnings of the run, e.g. a
    code-version mismatch) are shown at the top."""
    info = result.info
    prepared = result.prepared
    calls = result.report.sequence_calls
    parts: list[str] = [f"# VirNucPro prediction: `{prepared.input_path.name}`", ""]
    if info.demo_models:
        parts += [f"> **WARNING — {DEMO_WARNING}**", ""]
    for note in notes:
        parts += [f"> **{note}**", ""]
    parts += [
        "## Counts",
        _table(["records", "chunks", "frames", "shards", "chunk length"], [[
            prepared.n_records, prepared.n_chunks, prepared.n_frames, len(prepared.shards),
            prepared.chunk_length,
        ]]),
        "",
        f"Input SHA-256: `{prepared.input_sha256}`",
        "",
        "## Calls",
        _table(["virus", "non-virus", "no-call", "virus chunks", "chunks called", "whole regions",
                "proviruses", "calibrated"], [[
            calls.get("virus", 0), calls.get("non-virus", 0), calls.get("no-call", 0),
            result.report.n_virus_chunks, result.report.n_chunks_called,
            result.report.regions.get("whole", 0), result.report.regions.get("provirus", 0),
            result.report.n_calibrated,
        ]]),
        "",
        f"Preset `{info.thresholds.preset}`: {info.thresholds.rule}.",
        "",
        "## Throughput per stage",
        _throughput_table(result),
        "",
        "## Timings (seconds)",
        _table(list(result.timings), [list(result.timings.values())]),
        "",
        "## Memory",
    ]
    peaks: dict[str, float] = {}
    for stage in result.stages:
        for worker, mib in stage.worker_peak_mib.items():
            peaks[worker] = max(peaks.get(worker, 0.0), mib)
    measures = sorted({s.worker_peak_measure for s in result.stages if s.worker_peak_measure})
    what = f" ({'; '.join(measures)})" if measures else ""
    parts.append(f"Peak memory per worker, MiB: {_peaks_text(peaks)}{what}")
    notes_seen = sorted({c.note for c in result.checkpoints if c.note})
    used = [
        (c.name, d.index, d.used_mib, d.total_mib) for c in result.checkpoints for d in c.devices
    ]
    if used:
        busiest = max(used, key=lambda u: u[2])
        parts.append(
            f"Most device memory used: {busiest[2]:,.0f} of {busiest[3]:,.0f} MiB on GPU "
            f"{busiest[1]} at `{busiest[0]}`."
        )
    for note in notes_seen:
        parts.append(f"Note: {note}")
    memory_key = sample_key(MEMORY_ARTIFACT_KEY, prepared.input_path)
    parts += [f"Every checkpoint: the `{memory_key}` artifact.", "", "## Models"]
    for kind, m in info.models.items():
        parts += [f"- **{kind}** ({m.source}): `{m.file}`", f"  SHA-256 `{m.sha256}`"]
    parts += ["", "## Outputs"]
    parts += [f"- `{p}`" for p in result.paths.final_outputs]
    return "\n".join(parts) + "\n"


def publish_prediction_summary(result: PredictionResult, notes: Sequence[str] = ()) -> UUID:
    """Create the ``prediction-summary-<sample>`` markdown artifact of the current run."""
    return create_markdown_artifact(
        markdown=summary_markdown(result, notes),
        key=sample_key(SUMMARY_ARTIFACT_KEY, result.prepared.input_path),
        description=f"VirNucPro prediction of {result.prepared.input_path.name}"
        + (" (DEMO MODELS)" if result.demo_models else ""),
    )


def publish_report_link(result: PredictionResult) -> UUID:
    """Create the ``report-<sample>`` link artifact: the run's ``report.html`` (a ``file://``
    link, opened on a host that mounts the outbox)."""
    report = Path(result.paths.report).resolve()
    return create_link_artifact(
        link=report.as_uri(), link_text=f"report.html of {result.prepared.input_path.name}",
        key=sample_key(REPORT_ARTIFACT_KEY, result.prepared.input_path),
        description=f"VirNucPro report: {report}",
    )


# -- nightly and batch summaries -----------------------------------------------------------
def _calls_text(outcome: SampleOutcome) -> str:
    if not outcome.calls:
        return EMPTY
    return " / ".join(str(outcome.calls.get(k, 0)) for k in ("virus", "non-virus", "no-call"))


def _samples_table(samples: Sequence[SampleOutcome]) -> list[str]:
    """One narrow row per sample; errors and output folders listed under the table."""
    parts = [_table(
        ["sample", "SHA-256", "status", "sequences", "virus / non-virus / no-call", "seconds"],
        [[Path(s.file).name, s.sha256[:12], s.status, s.records, _calls_text(s), s.seconds]
         for s in samples],
    ), ""]
    problems = [s for s in samples if s.error]
    if problems:
        parts += ["Errors:", *(f"- `{Path(s.file).name}`: {s.error}" for s in problems), ""]
    done = [s for s in samples if s.status in ("done", "already-done")]
    if done:
        parts += ["Outputs:", *(f"- `{Path(s.file).name}`: `{s.output_dir}`" for s in done), ""]
    return parts


def batch_markdown(
    samples: Sequence[SampleOutcome],
    model_loads: Mapping[str, Mapping[str, int]],
    work_queue: str | None,
    notes: Sequence[str] = (),
) -> str:
    """The ``batch-summary-<work queue>`` text: the batch's samples and its pool's model loads."""
    parts = [f"# VirNucPro batch on `{work_queue or 'local run'}`", ""]
    if any(s.demo_models for s in samples):
        parts += [f"> **WARNING — {DEMO_WARNING}**", ""]
    parts += [f"> **{note}**\n" for note in notes]
    parts += _samples_table(samples) if samples else ["No sample.", ""]
    parts.append(f"Model loads per pool worker over the batch: {_loads_text(model_loads)}")
    return "\n".join(parts) + "\n"


def nightly_markdown(night: NightReport) -> str:
    """The ``nightly-summary`` text: one row per inbox file, the batch runs, the model loads."""
    parts = [f"# VirNucPro nightly batch {night.date}", ""]
    if any(s.demo_models for s in night.samples):
        parts += [f"> **WARNING — {DEMO_WARNING}**", ""]
    parts += [f"> **{note}**\n" for note in night.notes]
    if night.failed:
        parts += [f"> **{len(night.failed)} sample(s) NOT FINISHED** (failed or missing); the "
                  "others ran. Fix them (see Errors) and re-run: finished samples are skipped.", ""]
    parts += [
        f"- inbox: `{night.inbox}`", f"- outbox: `{night.outbox}`",
        f"- started {night.started}, finished {night.finished}", f"- mode: {night.mode}",
        "- samples: " + ", ".join(f"{night.count(status)} {status}" for status in STATUSES),
        "",
    ]
    parts += _samples_table(night.samples) if night.samples else ["The inbox held no sample.", ""]
    if night.batches:
        parts += ["## Batch runs", _table(
            ["batch run", "slot", "attempt", "samples", "state"],
            [[b.name, b.work_queue, b.attempt, ", ".join(b.samples), b.state] for b in night.batches],
        ), ""]
        parts += [f"- `{b.name}`: {b.message}" for b in night.batches if b.message]
        parts.append("")
    if night.model_loads:
        parts.append(f"Model loads per worker over the night ({night.pools_opened} pool(s) opened):")
        parts += [f"- {worker}: " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))
                  for worker, counts in sorted(night.model_loads.items())]
    return "\n".join(parts) + "\n"


def publish_nightly_summary(night: NightReport) -> UUID:
    """Create the ``nightly-summary`` markdown artifact of the current run."""
    return create_markdown_artifact(
        markdown=nightly_markdown(night), key=NIGHTLY_ARTIFACT_KEY,
        description=f"VirNucPro nightly batch {night.date}: {night.count('done')} done, "
        f"{len(night.failed)} not finished",
    )
