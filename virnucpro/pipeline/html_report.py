"""A self-contained HTML report a user can open: summary, calls, score histogram, per sequence."""

from __future__ import annotations

import html

from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.tables import read_prediction_results, read_sequence_calls
from virnucpro.pipeline.run_info import RunInfo

__all__ = ["render_report"]

_BINS = 20


def _histogram_svg(values: list[float]) -> str:
    counts = [0] * _BINS
    for v in values:
        counts[min(_BINS - 1, max(0, int(v * _BINS)))] += 1
    top = max(counts) or 1
    bars = []
    for i, c in enumerate(counts):
        h = 120 * c / top
        bars.append(
            f'<rect x="{i * 20 + 30}" y="{130 - h:.1f}" width="18" height="{h:.1f}" '
            f'fill="{"#c0392b" if i >= _BINS // 2 else "#2c7fb8"}"><title>{i / _BINS:.2f}–'
            f'{(i + 1) / _BINS:.2f}: {c}</title></rect>'
        )
    axis = (
        '<line x1="30" y1="130" x2="430" y2="130" stroke="#333"/>'
        '<text x="30" y="146" font-size="11">0</text><text x="222" y="146" font-size="11">0.5</text>'
        '<text x="420" y="146" font-size="11">1</text>'
        '<text x="140" y="160" font-size="11">P(virus) per frame</text>'
    )
    return f'<svg width="450" height="165" role="img">{"".join(bars)}{axis}</svg>'


def render_report(info: RunInfo, paths: OutputPaths) -> str:
    """Render the report from run_info and the written tables (so it shows what was written)."""
    frames = read_prediction_results(paths.prediction_results)
    calls = read_sequence_calls(paths.sequences)
    esc = html.escape
    warn = ""
    if info.demo_models:
        warn = ('<p class="warn">DEMO MODELS WITH RANDOM WEIGHTS: every call below is '
                "meaningless. Install the real weights (see README) to get real predictions.</p>")
    counts = info.report.sequence_calls
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            c.record_id, c.length, c.call.value, c.reason,
            "NA" if c.max_virus_score is None else f"{c.max_virus_score:.4f}",
            c.best_frame_id or "",
        )) + "</tr>"
        for c in calls
    )
    models = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v.file)}</td><td><code>{esc(v.sha256)}</code></td>"
        f"<td>{esc(v.source)}</td></tr>"
        for k, v in info.models.items()
    )
    timings = "".join(
        f"<tr><td>{esc(k)}</td><td>{v:.2f}</td></tr>" for k, v in info.timings_seconds.items()
    )
    stages = "".join(
        f"<tr><td>{esc(s.stage)}</td><td>{s.frames}</td><td>{s.frames_per_s:.1f}</td>"
        f"<td>{s.tokens_per_s:.0f}</td><td>{esc(str(s.worker_peak_mib))}</td></tr>"
        for s in info.stages
    )
    inp = info.input
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VirNucPro report: {esc(inp.path)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}.warn{{background:#fdd;padding:1em;
font-weight:bold;border:2px solid #c00}}</style></head><body>
<h1>VirNucPro {esc(info.virnucpro_version)} report</h1>{warn}
<p>Input <code>{esc(inp.path)}</code> (SHA-256 <code>{esc(inp.sha256)}</code>):
{inp.records} sequences, {inp.chunks} chunks of ≤{info.chunk_length} bp,
{inp.frames} stop-free frames. Device(s) {esc(', '.join(info.devices))}, precision
{esc(info.precision.value)}, persistent models: {info.persistent_models}.</p>
<h2>Calls per sequence</h2>
<p>virus: <b>{counts.get('virus', 0)}</b>, non-virus: <b>{counts.get('non-virus', 0)}</b>,
no-call: <b>{counts.get('no-call', 0)}</b>. Per chunk (original rule):
{info.report.n_virus_chunks} of {info.report.n_chunks_called} chunks virus.</p>
{_histogram_svg([f.score_virus for f in frames])}
<h2>Models</h2><table><tr><th>model</th><th>file</th><th>SHA-256</th><th>source</th></tr>{models}</table>
<h2>Stages</h2><table><tr><th>stage</th><th>frames</th><th>frames/s</th><th>tokens/s</th>
<th>peak MiB per worker</th></tr>{stages}</table>
<table><tr><th>timing</th><th>seconds</th></tr>{timings}</table>
<h2>Sequences</h2><table><tr><th>sequence</th><th>length</th><th>call</th><th>reason</th>
<th>max P(virus)</th><th>best frame</th></tr>{rows}</table>
</body></html>
"""
