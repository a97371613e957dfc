"""The report's plots as inline SVG strings: chunk-score tracks, histograms, a scatter plot.

Pure functions of typed records; every text that can hold a user string (IDs, descriptions) is
escaped here. Plots share one look: axes with ticks and labels, colours by call
(:data:`CALL_COLOURS`), a ``<title>`` tooltip on every mark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from virnucpro.domain.calls import RecordTrack
from virnucpro.domain.regions import Region, RegionKind

__all__ = [
    "CALL_COLOURS",
    "ScatterPoint",
    "nice_ticks",
    "track_svg",
    "histogram_svg",
    "scatter_svg",
]

CALL_COLOURS = {"virus": "#c0392b", "non-virus": "#2c7fb8", "no-call": "#888888"}
_REGION_FILL = {RegionKind.WHOLE: "#fbe3e0", RegionKind.PROVIRUS: "#f5b7b1"}
_UNSCORED = "#bbbbbb"
_FONT = 11


@dataclass(frozen=True, slots=True)
class _Frame:
    """A plot area inside an SVG of ``width`` × ``height`` px."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # the bottom of the plot area
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


def _linear(d0: float, d1: float, r0: float, r1: float):  # type: ignore[no-untyped-def]
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values from ``lo`` to ``hi`` (about ``target`` of them; steps 1, 2, 2.5, 5 × 10^k)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * magnitude) <= target)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + k * step, 10) for k in range(count)]


def _fmt(value: float) -> str:
    return f"{value:g}"


def _bp(value: float, step: float) -> str:
    if step >= 1000:
        return f"{value / 1000:g} kb"
    return f"{int(round(value)):,}"


def _svg(frame: _Frame, label: str, body: list[str]) -> str:
    return (
        f'<svg width="{frame.width}" height="{frame.height}" '
        f'viewBox="0 0 {frame.width} {frame.height}" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _axes(
    frame: _Frame,
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
) -> list[str]:
    """Axis lines, ticks at pixel positions with their labels, and the two axis titles."""
    out = [
        f'<line class="axis" x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x1}" y2="{frame.y0}"/>',
        f'<line class="axis" x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x0}" y2="{frame.y1}"/>',
    ]
    for x, text in x_ticks:
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" y2="{frame.y0 + 4}"/>')
        out.append(f'<text x="{x:.1f}" y="{frame.y0 + 15}" text-anchor="middle">{escape(text)}</text>')
    for y, text in y_ticks:
        out.append(f'<line class="axis" x1="{frame.x0 - 4}" y1="{y:.1f}" x2="{frame.x0}" y2="{y:.1f}"/>')
        out.append(f'<text x="{frame.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
    mid_x = (frame.x0 + frame.x1) / 2
    mid_y = (frame.y0 + frame.y1) / 2
    out.append(f'<text x="{mid_x:.1f}" y="{frame.height - 3}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(
        f'<text x="11" y="{mid_y:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 11 {mid_y:.1f})">{escape(y_label)}</text>'
    )
    return out


# -- tracks -------------------------------------------------------------------------------------
def track_svg(
    track: RecordTrack,
    regions: Sequence[Region],
    threshold: float,
    *,
    width: int = 900,
    height: int = 150,
) -> str:
    """One record's chunk scores along it: each scored chunk a bar at its score spanning its bases
    (red when it reaches ``threshold``), unscored chunks grey marks along the bottom, the threshold
    a dashed line, its viral regions shaded."""
    frame = _Frame(width, height, left=48, right=84, top=8, bottom=34)
    x = _linear(0, max(track.length, 1), frame.x0, frame.x1)
    y = _linear(0.0, 1.0, frame.y0, frame.y1)
    body: list[str] = []
    for region in regions:
        body.append(
            f'<rect class="region {region.kind.value}" x="{x(region.start - 1):.1f}" y="{frame.y1}" '
            f'width="{max(x(region.end) - x(region.start - 1), 1):.1f}" height="{frame.y0 - frame.y1}" '
            f'fill="{_REGION_FILL[region.kind]}"><title>{escape(region.kind.value)} region '
            f"{region.start:,}-{region.end:,} ({region.length:,} bp, {region.n_chunks} chunks, mean "
            f"score {region.mean_virus_score:.3f})</title></rect>"
        )
    body.append(
        f'<line class="threshold" x1="{frame.x0}" y1="{y(threshold):.1f}" x2="{frame.x1}" '
        f'y2="{y(threshold):.1f}" stroke="#555" stroke-dasharray="5 4"/>'
        f'<text x="{frame.x1 + 4}" y="{y(threshold) + 4:.1f}" fill="#555">threshold {threshold:g}</text>'
    )
    for chunk in track.chunks:
        x_start, x_end = x(chunk.start - 1), x(chunk.end)
        span = f"chunk {chunk.index}: {chunk.start:,}-{chunk.end:,} bp"
        if chunk.score is None:
            body.append(
                f'<rect class="unscored" x="{x_start:.1f}" y="{frame.y0 - 6}" '
                f'width="{max(x_end - x_start, 1):.1f}" height="4" fill="{_UNSCORED}">'
                f"<title>{span}, no stop-free frame (unscored)</title></rect>"
            )
            continue
        colour = CALL_COLOURS["virus"] if chunk.score >= threshold else CALL_COLOURS["non-virus"]
        best = f", best frame {chunk.best_frame_id}" if chunk.best_frame_id else ""
        body.append(
            f'<line class="chunk" x1="{x_start:.1f}" y1="{y(chunk.score):.1f}" x2="{x_end:.1f}" '
            f'y2="{y(chunk.score):.1f}" stroke="{colour}" stroke-width="4">'
            f"<title>{escape(span)}, score {chunk.score:.3f}{escape(best)}</title></line>"
        )
    ticks = nice_ticks(0, track.length, 8)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    body += _axes(
        frame,
        [(x(t), _bp(t, step)) for t in ticks],
        [(y(v), _fmt(v)) for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        "position in the sequence (bp)",
        "chunk score",
    )
    return _svg(frame, f"chunk scores along {track.record_id}", body)


# -- histograms ---------------------------------------------------------------------------------
def histogram_svg(
    title: str,
    values: Sequence[float],
    *,
    colour: str,
    x_label: str,
    bins: int = 20,
    width: int = 330,
    height: int = 210,
) -> str:
    """A histogram of ``values`` in [0, 1]: ``bins`` equal bins, counts on the y axis and above
    each bar, the title with the number of values."""
    frame = _Frame(width, height, left=46, right=10, top=26, bottom=34)
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value * bins)))] += 1
    top = max(max(counts), 1)
    y_ticks = nice_ticks(0, top, 4)
    step = max(1.0, y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else 1.0
    if y_ticks[-1] < top:  # the axis ends at a tick above the highest bar
        y_ticks.append(y_ticks[-1] + step)
    y_ticks = [t for t in y_ticks if float(t).is_integer()]
    y_max = max(top, y_ticks[-1])
    x = _linear(0.0, 1.0, frame.x0, frame.x1)
    y = _linear(0.0, y_max, frame.y0, frame.y1)
    bar = (frame.x1 - frame.x0) / bins
    body = [f'<text x="{frame.x0}" y="14" font-weight="bold">{escape(title)} (n = {len(values):,})</text>']
    if not values:
        body.append(f'<text x="{(frame.x0 + frame.x1) / 2:.1f}" y="{(frame.y0 + frame.y1) / 2:.1f}" '
                    'text-anchor="middle" fill="#888">no sequence</text>')
    for k, count in enumerate(counts):
        if not count:
            continue
        left, top_y = x(k / bins), y(count)
        body.append(
            f'<rect class="bar" x="{left + 0.5:.1f}" y="{top_y:.1f}" width="{bar - 1:.1f}" '
            f'height="{frame.y0 - top_y:.1f}" fill="{colour}"><title>{k / bins:.2f}-{(k + 1) / bins:.2f}: '
            f"{count:,}</title></rect>"
            f'<text class="count" x="{left + bar / 2:.1f}" y="{top_y - 2:.1f}" text-anchor="middle" '
            f'font-size="9">{count:,}</text>'
        )
    body += _axes(
        frame,
        [(x(v), _fmt(v)) for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        [(y(t), f"{int(t):,}") for t in y_ticks],
        x_label,
        "sequences",
    )
    return _svg(frame, f"histogram: {title}", body)


# -- scatter ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScatterPoint:
    """One sequence in the scatter plot: its length (bp), virus fraction, call and label."""

    length: int
    fraction: float
    call: str
    label: str


_MANTISSAS = (1, 2, 5)


def _log_bounds(lo: float, hi: float) -> tuple[float, float]:
    """The 1-2-5 values at or just outside ``[lo, hi]``."""
    marks = [m * 10**e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in _MANTISSAS]
    low = max(v for v in marks if v <= lo)
    high = min(v for v in marks if v >= hi)
    return low, high if high > low else low * 2


def _log_ticks(lo: float, hi: float) -> list[float]:
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = _MANTISSAS if last - first <= 3 else (1,)
    return [m * 10**e for e in range(first, last + 1) for m in steps if lo <= m * 10**e <= hi]


def _length_label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g} Mb"
    if value >= 1000:
        return f"{value / 1000:g} kb"
    return f"{value:g}"


def scatter_svg(
    points: Sequence[ScatterPoint],
    *,
    threshold: float | None = None,
    width: int = 640,
    height: int = 300,
) -> str:
    """Virus fraction against length (log axis), one dot per sequence coloured by call; the
    sequence threshold (``min_virus_fraction``) as a dashed line."""
    frame = _Frame(width, height, left=48, right=16, top=10, bottom=36)
    lengths = [max(p.length, 1) for p in points] or [100, 10_000]
    lo, hi = _log_bounds(min(lengths), max(lengths))
    log_x = _linear(math.log10(lo), math.log10(hi), frame.x0, frame.x1)

    def x(value: float) -> float:
        return log_x(math.log10(max(value, 1)))

    y = _linear(0.0, 1.0, frame.y0, frame.y1)
    body: list[str] = []
    if threshold is not None:
        body.append(
            f'<line class="threshold" x1="{frame.x0}" y1="{y(threshold):.1f}" x2="{frame.x1}" '
            f'y2="{y(threshold):.1f}" stroke="#555" stroke-dasharray="5 4"/>'
            f'<text x="{frame.x1 - 2}" y="{y(threshold) - 4:.1f}" text-anchor="end" fill="#555">'
            f"virus call at {threshold:g}</text>"
        )
    for p in points:
        body.append(
            f'<circle class="point {escape(p.call)}" cx="{x(p.length):.1f}" cy="{y(p.fraction):.1f}" '
            f'r="3.5" fill="{CALL_COLOURS.get(p.call, "#000")}" fill-opacity="0.7">'
            f"<title>{escape(p.label)}: {p.length:,} bp, virus fraction {p.fraction:.3g}, "
            f"{escape(p.call)}</title></circle>"
        )
    body += _axes(
        frame,
        [(x(t), _length_label(t)) for t in _log_ticks(lo, hi)],
        [(y(v), _fmt(v)) for v in (0.0, 0.25, 0.5, 0.75, 1.0)],
        "sequence length (bp, log scale)",
        "virus fraction",
    )
    return _svg(frame, "virus fraction against sequence length", body)
