"""The night report: ``<outbox>/nightly-<...>.html`` beside the night's JSON, one row per sample
and the drift of tonight against earlier nights. Framework-free (no prefect): pure functions of
:class:`~virnucpro.orchestration.batch.NightReport` records.

A night's figures (:class:`NightFigures`) are over its samples that ran tonight (status ``done``):

- virus fraction: sequences called virus / sequences;
- no-call rate: sequences called no-call / sequences;
- throughput: kept frames / run seconds, end to end (frames/s).

The drift compares tonight with the mean of the earlier nights found in the outbox (their JSON
files, the :data:`DRIFT_NIGHTS` most recent started before tonight, nights without a finished
sample left out): ``delta = tonight − mean``. A JSON file that cannot be read is skipped with a
warning; it never fails the night.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.outputs import OutputPaths
from virnucpro.orchestration.batch import STATUSES, NightReport, SampleOutcome
from virnucpro.pipeline.report.page import page, table

__all__ = [
    "DRIFT_NIGHTS",
    "NightFigures",
    "Drift",
    "night_figures",
    "night_from_dict",
    "read_earlier_nights",
    "drift",
    "html_path",
    "render_night_report",
    "write_night_html",
]

logger = logging.getLogger(__name__)

DRIFT_NIGHTS = 7
_DEMO = (
    '<p class="warn">DEMO MODELS WITH RANDOM WEIGHTS were used by at least one sample: its calls '
    "are meaningless.</p>"
)


@dataclass(frozen=True, slots=True)
class NightFigures:
    """One night's figures over its finished samples (``None`` when it has none)."""

    date: str
    started: str
    samples: int
    sequences: int
    virus_fraction: float | None
    no_call_rate: float | None
    frames_per_s: float | None


@dataclass(frozen=True, slots=True)
class Drift:
    """One figure tonight against the mean of the earlier nights."""

    name: str
    tonight: float | None
    earlier_mean: float | None
    earlier: tuple[float | None, ...]

    @property
    def delta(self) -> float | None:
        if self.tonight is None or self.earlier_mean is None:
            return None
        return self.tonight - self.earlier_mean


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _sample_rate(s: SampleOutcome, call: str) -> float | None:
    return _ratio(s.calls.get(call, 0), s.records or 0)


def _frames_per_s(s: SampleOutcome) -> float | None:
    return _ratio(s.frames or 0, s.seconds or 0.0)


def night_figures(night: NightReport) -> NightFigures:
    done = [s for s in night.samples if s.status == "done" and s.records]
    sequences = sum(s.records or 0 for s in done)
    return NightFigures(
        date=night.date,
        started=night.started,
        samples=len(done),
        sequences=sequences,
        virus_fraction=_ratio(sum(s.calls.get("virus", 0) for s in done), sequences),
        no_call_rate=_ratio(sum(s.calls.get("no-call", 0) for s in done), sequences),
        frames_per_s=_ratio(sum(s.frames or 0 for s in done), sum(s.seconds or 0.0 for s in done)),
    )


def night_from_dict(data: dict) -> NightReport:  # type: ignore[type-arg]
    """A :class:`NightReport` from its JSON (keys this version does not know are ignored)."""
    sample_fields = {f.name for f in dataclasses.fields(SampleOutcome)}
    night_fields = {f.name for f in dataclasses.fields(NightReport)}
    values = {k: v for k, v in data.items() if k in night_fields}
    values["samples"] = tuple(
        SampleOutcome(**{k: v for k, v in s.items() if k in sample_fields}) for s in data["samples"]
    )
    return NightReport(**values)


def read_earlier_nights(outbox: Path, tonight: NightReport, limit: int = DRIFT_NIGHTS) -> list[NightReport]:
    """The ``limit`` most recent nights of ``outbox`` started before ``tonight``, oldest first."""
    nights = []
    for path in sorted(Path(outbox).glob("nightly-*.json")):
        if path.name == tonight.path_name:
            continue
        try:
            night = night_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: not a readable night report (%s); left out of the drift", path, exc)
            continue
        if night.started < tonight.started:
            nights.append(night)
    return sorted(nights, key=lambda n: n.started)[-limit:] if limit > 0 else []


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None


def drift(tonight: NightReport, earlier: Sequence[NightReport]) -> list[Drift]:
    """Virus fraction, no-call rate and throughput tonight against the earlier nights' mean."""
    now = night_figures(tonight)
    before = [night_figures(n) for n in earlier]
    rows = []
    for name in ("virus_fraction", "no_call_rate", "frames_per_s"):
        values = tuple(getattr(f, name) for f in before)
        rows.append(Drift(name, getattr(now, name), _mean(values), values))
    return rows


def html_path(night: NightReport) -> Path:
    """Beside the night's JSON, with the same name: ``nightly-<...>.html``."""
    return (Path(night.outbox) / night.path_name).with_suffix(".html")


# -- rendering --------------------------------------------------------------------------------
_LABELS = {"virus_fraction": "virus fraction", "no_call_rate": "no-call rate",
           "frames_per_s": "throughput (frames/s)"}


def _show(name: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = "+" if signed and value > 0 else ""
    if name == "frames_per_s":
        return f"{sign}{value:,.1f}"
    return f"{sign}{100 * value:.1f}" + (" pp" if signed else " %")


def _report_link(outbox: Path, s: SampleOutcome) -> str:
    report = OutputPaths.for_dir(s.output_dir).report
    if not report.is_file():
        return "-"
    href = quote(Path(os.path.relpath(report, outbox)).as_posix())
    return f'<a href="{escape(href)}">report.html</a>'


def _status(s: SampleOutcome) -> str:
    """The status; a finished sample made with other settings says which (rerun_changed re-runs it)."""
    if not s.settings_changed:
        return escape(s.status)
    return (f'{escape(s.status)}<br><small class="muted">made with other settings: '
            f'{escape(", ".join(s.settings_changed))}</small>')


def _sample_rows(night: NightReport) -> list[list[str]]:
    outbox = Path(night.outbox)
    rows = []
    for s in night.samples:
        rate_virus, rate_none = _sample_rate(s, "virus"), _sample_rate(s, "no-call")
        rows.append([
            escape(Path(s.file).name), f"<code>{escape(s.sha256[:12])}</code>", _status(s),
            f"{s.records:,}" if s.records is not None else "-",
            *(f"{s.calls[c]:,}" if c in s.calls else "-" for c in ("virus", "non-virus", "no-call")),
            _show("virus_fraction", rate_virus), _show("no_call_rate", rate_none),
            _show("frames_per_s", _frames_per_s(s) if s.status == "done" else None),
            _report_link(outbox, s), escape(s.error or ""),
        ])
    return rows


def _drift_table(rows: Sequence[Drift], earlier: Sequence[NightReport]) -> str:
    if not earlier:
        return "<p>No earlier night in this outbox: the drift starts with the next night.</p>"
    headers = ["figure", "tonight", f"mean of {len(earlier)} earlier", "delta",
               *(n.date for n in earlier)]
    body = [[_LABELS[d.name], _show(d.name, d.tonight), _show(d.name, d.earlier_mean),
             _show(d.name, d.delta, signed=True), *(_show(d.name, v) for v in d.earlier)]
            for d in rows]
    return table(headers, body, numeric=tuple(range(1, len(headers))))


def render_night_report(night: NightReport, earlier: Sequence[NightReport]) -> str:
    """The night report page (module docstring); ``earlier`` from :func:`read_earlier_nights`."""
    counts = ", ".join(f"{night.count(status)} {status}" for status in STATUSES)
    figures = night_figures(night)
    samples = table(
        ["sample", "SHA-256", "status", "sequences", "virus", "non-virus", "no-call",
         "virus fraction", "no-call rate", "frames/s", "report", "error"],
        _sample_rows(night), numeric=(3, 4, 5, 6, 7, 8, 9),
    ) if night.samples else "<p>The inbox held no sample.</p>"
    failed = (
        f'<p class="warn">{len(night.failed)} sample(s) FAILED; the others ran. Fix them (see the '
        "error column) and run the night again: finished samples are skipped.</p>"
        if night.failed else ""
    )
    body = "\n".join([
        f"<h1>VirNucPro night {escape(night.date)}</h1>",
        _DEMO if any(s.demo_models for s in night.samples) else "",
        failed,
        f"<p>Inbox <code>{escape(night.inbox)}</code>, outbox <code>{escape(night.outbox)}</code>; "
        f"started {escape(night.started)}, finished {escape(night.finished)}; {escape(night.mode)}."
        f"</p><p>Samples: {escape(counts)}. Tonight's {figures.samples} finished sample(s) hold "
        f"{figures.sequences:,} sequences.</p>",
        "<h2>Samples</h2>", samples,
        f"<h2>Drift against earlier nights</h2><p class=\"muted\">Over the samples that ran "
        f"tonight; the mean is over the {DRIFT_NIGHTS} most recent earlier nights at most; "
        "rates in % and their deltas in percentage points (pp).</p>",
        _drift_table(drift(night, earlier), earlier),
    ])
    return page(f"VirNucPro night {night.date}", body, script=False)


def write_night_html(night: NightReport) -> Path:
    """Write the night report beside the night's JSON (earlier nights read from the outbox)."""
    earlier = read_earlier_nights(Path(night.outbox), night)
    path = html_path(night)
    atomic_write_text(path, render_night_report(night, earlier))
    return path
