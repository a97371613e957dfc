"""Prefect artifacts of a run: the GPU memory table and the markdown summaries.

- ``gpu-memory-checkpoints`` (table): one row per device per memory checkpoint (stage,
  checkpoint, device, used/free/total MiB, per-process MiB, torch peak per worker, time); on a
  machine without NVML one row per checkpoint saying "NVML unavailable: <why>".
- ``prediction-summary`` (markdown): counts, calls, throughput per stage, timings, memory, model
  checksums (the run's :class:`~virnucpro.pipeline.run_info.RunInfo`), output paths, and a loud warning when demo models were used.
- ``nightly-summary`` (markdown): one row per sample of a nightly batch.

The ``*_rows``/``*_markdown`` functions are pure (testable without Prefect); ``publish_*`` create
the artifacts in the current flow or task run.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from virnucpro.orchestration.batch import STATUSES, NightReport
from virnucpro.pipeline.memory import MemoryCheckpoint
from virnucpro.pipeline.finalize import PredictionResult

__all__ = [
    "MEMORY_ARTIFACT_KEY",
    "SUMMARY_ARTIFACT_KEY",
    "NIGHTLY_ARTIFACT_KEY",
    "MEMORY_COLUMNS",
    "DEMO_WARNING",
    "memory_table_rows",
    "summary_markdown",
    "publish_memory_checkpoints",
    "publish_prediction_summary",
    "nightly_markdown",
    "publish_nightly_summary",
]

MEMORY_ARTIFACT_KEY = "gpu-memory-checkpoints"
SUMMARY_ARTIFACT_KEY = "prediction-summary"
NIGHTLY_ARTIFACT_KEY = "nightly-summary"

MEMORY_COLUMNS = (
    "stage", "checkpoint", "device", "used_mib", "free_mib", "total_mib",
    "process_mib", "worker_peak_mib", "time", "note",
)
DEMO_WARNING = (
    "DEMO MODELS WITH RANDOM WEIGHTS: every call of this run is meaningless. "
    "Install the real DNABERT-S, ESM-2 and classifier weights (see README) and re-run."
)
"""The flow's words for a demo run (run_info.json's own is ``run_info.DEMO_WARNING``)."""
_STAGE_OF_CHECKPOINT = {"start": "start", "after-dnabert": "DNABERT-S", "after-esm": "ESM-2", "end": "end"}


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def _mib(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _peaks_text(peaks: Mapping[str, float]) -> str:
    return "; ".join(f"{worker}: {mib:.1f}" for worker, mib in sorted(peaks.items())) or "-"


# -- memory ---------------------------------------------------------------------------------
def memory_table_rows(checkpoints: Iterable[MemoryCheckpoint]) -> list[dict[str, Any]]:
    """One row per device per checkpoint; a "NVML unavailable" row when no device was read."""
    rows: list[dict[str, Any]] = []
    for cp in checkpoints:
        common = {
            "stage": _STAGE_OF_CHECKPOINT.get(cp.name, cp.name),
            "checkpoint": cp.name,
            "worker_peak_mib": _peaks_text(cp.worker_peaks_mib),
            "time": _iso(cp.time),
        }
        if not cp.devices:
            rows.append({
                **common, "device": "-", "used_mib": None, "free_mib": None, "total_mib": None,
                "process_mib": "-", "note": cp.note or "no device memory was read",
            })
            continue
        for dev in cp.devices:
            processes = "; ".join(f"pid {p.pid}: {p.used_mib:.0f}" for p in dev.processes) or "-"
            rows.append({
                **common, "device": f"{dev.index}: {dev.name}", "used_mib": _mib(dev.used_mib),
                "free_mib": _mib(dev.free_mib), "total_mib": _mib(dev.total_mib),
                "process_mib": processes, "note": cp.note,
            })
    return [{column: row[column] for column in MEMORY_COLUMNS} for row in rows]


def publish_memory_checkpoints(checkpoints: Sequence[MemoryCheckpoint], sample: str = "") -> UUID:
    """Create the ``gpu-memory-checkpoints`` table artifact of the current run."""
    description = "Device memory (NVML) at each checkpoint, MiB"
    if sample:
        description += f", {sample}"
    return create_table_artifact(
        table=memory_table_rows(checkpoints), key=MEMORY_ARTIFACT_KEY, description=description
    )


# -- prediction summary --------------------------------------------------------------------
def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value).replace("|", "\\|")


def summary_markdown(result: PredictionResult) -> str:
    """The ``prediction-summary`` text of one run."""
    info = result.info
    prepared = result.prepared
    calls = result.report.sequence_calls
    parts: list[str] = [f"# VirNucPro prediction: `{prepared.input_path.name}`", ""]
    if info.demo_models:
        parts += [f"> **WARNING — {DEMO_WARNING}**", ""]
    parts += [
        "## Counts",
        _table(["records", "chunks", "frames", "shards", "chunk length", "input SHA-256"], [[
            prepared.n_records, prepared.n_chunks, prepared.n_frames, len(prepared.shards),
            prepared.chunk_length, f"`{prepared.input_sha256}`",
        ]]),
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
        _table(
            ["stage", "workers", "shards (skipped)", "frames", "tokens", "seconds", "frames/s",
             "tokens/s", "pool start s", "model loads", "restarts", "OOM retries"],
            [[
                s.stage.label, "persistent" if s.persistent else "per stage",
                f"{s.shards_total} ({s.shards_skipped})", s.frames, s.tokens, s.seconds,
                s.frames_per_s, s.tokens_per_s, s.pool_start_seconds,
                "; ".join(f"{w}: " + ", ".join(f"{m} {n}" for m, n in sorted(loads.items()))
                          for w, loads in sorted(s.model_loads.items())) or "-",
                s.worker_restarts, s.oom_retries,
            ] for s in result.stages],
        ),
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
    notes = sorted({c.note for c in result.checkpoints if c.note})
    used = [
        (c.name, d.index, d.used_mib, d.total_mib) for c in result.checkpoints for d in c.devices
    ]
    if used:
        busiest = max(used, key=lambda u: u[2])
        parts.append(
            f"Most device memory used: {busiest[2]:,.0f} of {busiest[3]:,.0f} MiB on GPU "
            f"{busiest[1]} at `{busiest[0]}`."
        )
    for note in notes:
        parts.append(f"Note: {note}")
    parts += [f"Every checkpoint: the `{MEMORY_ARTIFACT_KEY}` artifact.", "", "## Models"]
    parts.append(_table(
        ["model", "source", "file", "SHA-256"],
        [[kind, m.source, f"`{m.file}`", f"`{m.sha256}`"] for kind, m in info.models.items()],
    ))
    parts += ["", "## Outputs"]
    parts += [f"- `{p}`" for p in result.paths.final_outputs]
    return "\n".join(parts) + "\n"


def publish_prediction_summary(result: PredictionResult) -> UUID:
    """Create the ``prediction-summary`` markdown artifact of the current run."""
    return create_markdown_artifact(
        markdown=summary_markdown(result),
        key=SUMMARY_ARTIFACT_KEY,
        description=f"VirNucPro prediction of {result.prepared.input_path.name}"
        + (" (DEMO MODELS)" if result.demo_models else ""),
    )


# -- nightly summary ------------------------------------------------------------------------
def nightly_markdown(night: NightReport) -> str:
    """The ``nightly-summary`` text: one row per inbox file, then the pool's model loads."""
    parts = [f"# VirNucPro nightly batch {night.date}", ""]
    if any(s.demo_models for s in night.samples):
        parts += [f"> **WARNING — {DEMO_WARNING}**", ""]
    if night.failed:
        parts += [f"> **{len(night.failed)} sample(s) FAILED**; the others ran. Fix them (see the "
                  "error column) and re-run: finished samples are skipped.", ""]
    parts += [
        f"- inbox: `{night.inbox}`", f"- outbox: `{night.outbox}`",
        f"- started {night.started}, finished {night.finished}", f"- mode: {night.mode}",
        "- samples: " + ", ".join(
            f"{night.count(status)} {status}"
            for status in STATUSES
        ),
        "",
        _table(
            ["sample", "SHA-256", "status", "sequences", "virus", "non-virus", "no-call",
             "seconds", "output or error"],
            [[
                Path(s.file).name, s.sha256[:12], s.status, s.records, s.calls.get("virus"),
                s.calls.get("non-virus"), s.calls.get("no-call"), s.seconds,
                s.error if s.error else f"`{s.output_dir}`",
            ] for s in night.samples],
        ) if night.samples else "The inbox held no sample.",
        "",
    ]
    if night.model_loads:
        loads = "; ".join(
            f"{worker}: " + ", ".join(f"{model} {n}" for model, n in sorted(counts.items()))
            for worker, counts in sorted(night.model_loads.items())
        )
        parts.append(f"Model loads per worker over the night ({night.pools_opened} pool(s) "
                     f"opened): {loads}")
    return "\n".join(parts) + "\n"


def publish_nightly_summary(night: NightReport) -> UUID:
    """Create the ``nightly-summary`` markdown artifact of the current run."""
    return create_markdown_artifact(
        markdown=nightly_markdown(night), key=NIGHTLY_ARTIFACT_KEY,
        description=f"VirNucPro nightly batch {night.date}: {night.count('done')} done, "
        f"{len(night.failed)} failed",
    )
