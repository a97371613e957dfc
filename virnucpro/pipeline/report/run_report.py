"""``report.html`` of one run, rendered from the tables it wrote and its :class:`RunInfo`.

Read from the written files (so the page shows what is on disk): ``prediction_sequences.tsv``
(the calls and the per-sequence table), ``prediction_regions.tsv`` (shaded regions, the region
column) and, for the records whose tracks are drawn, their rows of ``prediction_results.txt``.
Sections: summary and links to every output; chunk-score tracks of the most interesting
sequences (those with a provirus region, then the highest ``virus_score``; at most
:data:`MAX_TRACKS`); score histograms by call and virus fraction against length; the sortable,
filterable per-sequence table (at most :data:`MAX_TABLE_ROWS` rows); how the calls were made; the
run (date, version, every parameter, models with SHA-256, devices, precision, stages, timings).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from virnucpro.domain.calls import RecordTrack, SequenceCall, SequenceCallLabel, call_chunk_frames
from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.domain.tables import iter_prediction_results, read_regions, read_sequence_calls
from virnucpro.pipeline.report.page import key_value_table, page, table, text_or_dash, yes_no
from virnucpro.pipeline.report.svg import (
    CALL_COLOURS,
    ScatterPoint,
    histogram_svg,
    scatter_svg,
    track_svg,
)
from virnucpro.pipeline.run_info import RunInfo
from virnucpro.pipeline.tracks import RecordRow, iter_tracks

__all__ = ["MAX_TRACKS", "MAX_TABLE_ROWS", "MAX_POINTS", "render_report"]

MAX_TRACKS = 30
MAX_TABLE_ROWS = 10_000
MAX_POINTS = 5_000
_DEMO = (
    '<p class="warn">DEMO MODELS WITH RANDOM WEIGHTS: every call below is meaningless. Install '
    "the real weights (see README) to get real predictions.</p>"
)


def render_report(info: RunInfo, paths: OutputPaths) -> str:
    """The report page of the run in ``paths`` (module docstring)."""
    calls = read_sequence_calls(paths.sequences)
    regions: dict[str, list[Region]] = {}
    for region in read_regions(paths.regions):
        regions.setdefault(region.sequence_id, []).append(region)
    tracks = _tracks(paths, _track_records(calls, regions), info.chunk_length)
    body = [
        f"<h1>VirNucPro {escape(info.virnucpro_version)} report</h1>",
        f'<p class="muted">{escape(info.input.path)} &middot; run {escape(info.created)}</p>',
        _DEMO if info.demo_models else "",
        _section("summary", _summary(info, paths)),
        _section("tracks", _tracks_section(info, tracks, regions, len(calls))),
        _section("distributions", _distributions(info, calls)),
        _section("sequences", _sequence_table(
            info, calls, regions, {t.record_id: k for k, t in enumerate(tracks, 1)}
        )),
        _section("calling", _how_called(info)),
        _section("run", _run_section(info)),
    ]
    return page(f"VirNucPro report: {info.input.path}", "\n".join(body))


def _section(name: str, html: str) -> str:
    return f'<section id="{name}-section">{html}</section>'


# -- data ---------------------------------------------------------------------------------------
def _track_records(
    calls: Sequence[SequenceCall], regions: dict[str, list[Region]]
) -> list[SequenceCall]:
    """The records whose tracks are drawn: with a provirus region first, then by virus_score."""
    scored = [c for c in calls if c.virus_score is not None]

    def has_provirus(call: SequenceCall) -> bool:
        return any(r.kind is RegionKind.PROVIRUS for r in regions.get(call.record_id, ()))

    ranked = sorted(scored, key=lambda c: (not has_provirus(c), -(c.virus_score or 0.0)))
    return ranked[:MAX_TRACKS]


def _tracks(paths: OutputPaths, records: Sequence[SequenceCall], chunk_length: int) -> list[RecordTrack]:
    wanted = {f"{c.record_id}_chunk_{k}" for c in records for k in range(1, c.n_chunks + 1)}
    called = call_chunk_frames(iter_prediction_results(paths.prediction_results, wanted))
    rows = [RecordRow(c.record_id, c.length, c.n_chunks, c.description) for c in records]
    return list(iter_tracks(rows, called, chunk_length))


# -- sections -----------------------------------------------------------------------------------
def _summary(info: RunInfo, paths: OutputPaths) -> str:
    report, counts = info.report, info.report.sequence_calls
    calls = ", ".join(
        f'<span class="call-{label.value}">{label.value}</span>: <b>{counts.get(label.value, 0):,}</b>'
        for label in SequenceCallLabel
    )
    files = [
        (paths.prediction_results, "one row per stop-free frame (the original's format)"),
        (paths.highest_score, "one row per scored chunk (the original's format and rule)"),
        (paths.sequences, "one row per input sequence: call, virus_score, virus fraction, description"),
        (paths.regions, "one row per viral region (a whole sequence or a provirus), 1-based bp"),
        (paths.virus_fasta, f"the {report.n_virus_fasta:,} sequences called virus (for CheckV)"),
        (paths.provirus_fasta, f"the {report.n_provirus_fasta:,} provirus regions' sequences"),
        (paths.run_info, "provenance: parameters, input and model SHA-256, devices, timings"),
    ]
    links = "".join(
        f'<li><a href="{escape(path.name)}">{escape(path.name)}</a> '
        f'<span class="muted">({_size(path)})</span>: {escape(what)}</li>'
        for path, what in files
    )
    inp = info.input
    return (
        "<h2>Summary</h2>"
        f"<p>{inp.records:,} sequences, {inp.chunks:,} chunks of at most {info.chunk_length} bp, "
        f"{inp.frames:,} stop-free frames.</p>"
        f"<p>Calls per sequence: {calls}. Viral regions: "
        f"{_count(report.regions.get('whole', 0), 'whole sequence')}, "
        f"{_count(report.regions.get('provirus', 0), 'provirus', 'proviruses')}. Per chunk (the original "
        f"rule): {report.n_virus_chunks:,} of {report.n_chunks_called:,} scored chunks virus.</p>"
        f"<p>Outputs (in this folder):</p><ul>{links}</ul>"
    )


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _size(path) -> str:  # type: ignore[no-untyped-def]
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    return f"{size:,} bytes" if size < 10_000 else f"{size / 1024:,.0f} KiB"


def _legend(threshold: float) -> str:
    items = [
        (CALL_COLOURS["virus"], f"chunk score &ge; {threshold:g} (counts as virus)"),
        (CALL_COLOURS["non-virus"], f"chunk score &lt; {threshold:g}"),
        ("#bbbbbb", "unscored chunk (no stop-free frame)"),
        ("#fbe3e0", "whole-sequence region (called virus)"),
        ("#f5b7b1", "provirus region"),
    ]
    return '<p class="legend">' + "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{t}</span>' for c, t in items
    ) + "</p>"


def _tracks_section(
    info: RunInfo, tracks: Sequence[RecordTrack], regions: dict[str, list[Region]], n_calls: int
) -> str:
    threshold = info.thresholds.chunk_threshold
    note = (
        f"All {len(tracks)} scored sequences"
        if len(tracks) < MAX_TRACKS
        else f"{len(tracks)} of {n_calls:,} sequences: those with a provirus region first, then "
        "the highest virus_score; every sequence is in the table below"
    )
    parts = [
        "<h2>Chunk-score tracks</h2>",
        f'<p class="muted">{note}. Each bar is a chunk at its bases; hover for its numbers.</p>',
        _legend(threshold),
    ]
    for k, track in enumerate(tracks, 1):
        own = regions.get(track.record_id, [])
        described = f" &mdash; {escape(track.description)}" if track.description else ""
        where = "; ".join(f"{r.kind.value} {r.start:,}-{r.end:,}" for r in own) or "no region"
        parts.append(
            f'<div class="track" id="track-{k}"><h3>{escape(track.record_id)}{described}</h3>'
            f'<p class="muted">{track.length:,} bp, {len(track.chunks)} chunks; {escape(where)}</p>'
            f"{track_svg(track, own, threshold)}</div>"
        )
    return "\n".join(parts)


def _distributions(info: RunInfo, calls: Sequence[SequenceCall]) -> str:
    histograms = [
        histogram_svg(
            label.value,
            [c.virus_score for c in calls if c.call is label and c.virus_score is not None],
            colour=CALL_COLOURS[label.value],
            x_label="virus_score",
        )
        for label in (SequenceCallLabel.VIRUS, SequenceCallLabel.NON_VIRUS)
    ]
    if info.calibration is not None:
        histograms.append(histogram_svg(
            "calibrated, all scored",
            [c.calibrated_virus_score for c in calls if c.calibrated_virus_score is not None],
            colour="#6c3483", x_label="calibrated P(virus)",
        ))
    n_no_call = sum(c.call is SequenceCallLabel.NO_CALL for c in calls)
    scored = [c for c in calls if c.virus_fraction is not None]
    step = max(1, -(-len(scored) // MAX_POINTS))
    points = [
        ScatterPoint(c.length, c.virus_fraction or 0.0, c.call.value, c.record_id)
        for c in scored[::step]
    ]
    sampled = f" (every {step}th of {len(scored):,})" if step > 1 else ""
    return (
        "<h2>Score distributions</h2>"
        f'<p class="muted">virus_score of each scored sequence, by call; {n_no_call:,} no-call '
        "sequences have no score.</p>"
        f'<div class="plots">{"".join(histograms)}</div>'
        f"<h3>Virus fraction against length{sampled}</h3>"
        + scatter_svg(points, threshold=info.thresholds.min_virus_fraction)
    )


_COLUMNS = (  # (header, data-key, numeric)
    ("sequence", "sequence", False), ("description", "description", False),
    ("length", "length", True), ("call", "call", False), ("virus_score", "virus_score", True),
    ("calibrated", "calibrated", True), ("FDR", "fdr", True),
    ("virus fraction", "virus_fraction", True), ("virus chunks", "virus_chunks", True),
    ("scored chunks", "scored_chunks", True), ("chunks", "chunks", True),
    ("max P(virus)", "max_virus_score", True), ("regions", "regions", True),
    ("reason", "reason", False),
)


def _sequence_table(
    info: RunInfo, calls: Sequence[SequenceCall], regions: dict[str, list[Region]],
    track_of: dict[str, int],
) -> str:
    calibrated = info.calibration is not None
    columns = [c for c in _COLUMNS if calibrated or c[1] not in ("calibrated", "fdr")]
    head = "".join(
        f'<th data-key="{key}"{" data-type=num" if num else ""}>{escape(name)}</th>'
        for name, key, num in columns
    )
    rows = [_sequence_row(c, regions.get(c.record_id, []), track_of.get(c.record_id), calibrated)
            for c in calls[:MAX_TABLE_ROWS]]
    more = (
        f" The first {MAX_TABLE_ROWS:,} of {len(calls):,} are listed; all are in "
        "prediction_sequences.tsv."
        if len(calls) > MAX_TABLE_ROWS else ""
    )
    menu = "".join(f'<option value="{v}">{v}</option>' for v in ("virus", "non-virus", "no-call"))
    return (
        "<h2>Sequences</h2>"
        f'<p class="muted">Click a header to sort; type to filter (any column).{more}</p>'
        '<p class="controls"><input type="search" data-table="sequences" placeholder="filter, e.g. an ID">'
        f' <select data-table="sequences"><option value="">every call</option>{menu}</select>'
        f' <span data-shown="sequences">{len(rows):,}</span> shown</p>'
        f'<div class="wide"><table class="sortable" id="sequences"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _num(value: float | int | None, digits: str = ".4g") -> str:
    if value is None:
        return '<td class="num" data-v="">NA</td>'
    shown = f"{value:,}" if isinstance(value, int) else format(value, digits)
    return f'<td class="num" data-v="{value!r}">{shown}</td>'


def _sequence_row(
    call: SequenceCall, regions: Sequence[Region], track: int | None, calibrated: bool
) -> str:
    name = escape(call.record_id)
    if track is not None:
        name = f'<a href="#track-{track}">{name}</a>'
    where = "; ".join(f"{r.kind.value} {r.start:,}-{r.end:,}" for r in regions)
    cells = [
        f"<td>{name}</td>", f'<td class="desc">{escape(call.description)}</td>', _num(call.length),
        f'<td class="call-{call.call.value}">{call.call.value}</td>', _num(call.virus_score),
    ]
    if calibrated:
        cells += [_num(call.calibrated_virus_score), _num(call.fdr)]
    cells += [
        _num(call.virus_fraction), _num(call.n_virus_chunks), _num(call.n_scored_chunks),
        _num(call.n_chunks), _num(call.max_virus_score),
        f'<td data-v="{len(regions)}">{escape(where)}</td>',
        f"<td>{escape(call.reason)}</td>",
    ]
    return f'<tr data-call="{call.call.value}">{"".join(cells)}</tr>'


def _how_called(info: RunInfo) -> str:
    t, r, c = info.thresholds, info.regions, info.calibration
    rows = [
        ("preset", escape(t.preset)),
        ("rule", escape(t.rule)),
        ("chunk threshold (chunk score)", f"{t.chunk_threshold:g}"),
        ("regions", escape(
            ("no smoothing" if r.smooth_window == 1 else f"{r.smoothing} of {r.smooth_window} chunks")
            + f", gaps of up to {_count(r.max_gap, 'unscored chunk')} bridged, provirus regions "
            f"of at least {r.min_length:,} bp"
        )),
    ]
    if c is None:
        rows.append(("calibration", "none (run with --calibration FILE of `virnucpro calibrate`)"))
    else:
        rows += [
            ("calibration file", f"<code>{escape(c.file)}</code> (SHA-256 <code>{escape(c.sha256)}</code>)"),
            ("temperature", f"{c.temperature:.4g}, fitted on {c.n_sequences:,} sequences "
                            f"({c.n_virus:,} virus, {c.n_non_virus:,} non-virus): {escape(c.fitted_on)}"),
            ("calibration error (ECE)", f"{c.ece_before:.3f} before, {c.ece_after:.3f} after"),
        ]
    return "<h2>How the calls were made</h2>" + key_value_table(rows)


def _flat(parameters: dict, prefix: str = "") -> list[tuple[str, object]]:  # type: ignore[type-arg]
    out: list[tuple[str, object]] = []
    for key, value in parameters.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def _run_section(info: RunInfo) -> str:
    inp = info.input
    run = key_value_table([
        ("run date", escape(info.created)),
        ("VirNucPro", escape(info.virnucpro_version)),
        ("host", escape(info.host)),
        ("Python / torch", escape(f"{info.python} / {info.torch}")),
        ("platform", escape(info.platform)),
        ("input", f"<code>{escape(inp.path)}</code> (SHA-256 <code>{escape(inp.sha256)}</code>)"),
        ("devices", escape(", ".join(info.devices))),
        ("precision", escape(info.precision.value)),
        ("persistent models", yes_no(info.persistent_models)),
        ("demo models", yes_no(info.demo_models)),
    ])
    params = key_value_table((name, text_or_dash(value)) for name, value in _flat(info.parameters))
    models = table(
        ("model", "file", "SHA-256", "source", "found via", "MiB"),
        ([escape(kind), f"<code>{escape(m.file)}</code>", f"<code>{escape(m.sha256)}</code>",
          escape(m.source), escape(m.found_via), f"{m.size / 2**20:,.1f}"]
         for kind, m in info.models.items()),
        numeric=(5,),
    )
    stages = table(
        ("stage", "frames", "frames/s", "tokens/s", "peak MiB per worker", "restarts", "OOM retries",
         "duplicates (computed once)", "read from the embedding cache", "fp32 re-runs"),
        ([escape(s.label), f"{s.frames:,}", f"{s.frames_per_s:,.1f}", f"{s.tokens_per_s:,.0f}",
          escape(", ".join(f"{w}: {m:,.0f}" for w, m in s.worker_peak_mib.items()) or "-"),
          str(s.worker_restarts), str(s.oom_retries), f"{s.duplicate_frames:,}", f"{s.cache_hits:,}",
          f"{s.fp32_recomputed:,}"] for s in info.stages),
        numeric=(1, 2, 3, 5, 6, 7, 8, 9),
    )
    timings = table(("step", "seconds"), ([escape(k), f"{v:,.2f}"] for k, v in info.timings_seconds.items()),
                    numeric=(1,))
    return (
        f"<h2>Run</h2>{run}<h3>Parameters</h3>{params}<h3>Models</h3>{models}"
        f"<h3>Stages</h3>{stages}<h3>Timings</h3>{timings}"
    )
