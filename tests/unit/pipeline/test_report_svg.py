"""The report's plots: round ticks, a track's marks at its chunks' bases, escaped labels."""

from __future__ import annotations

import re

from virnucpro.domain.calls import ChunkCall, RecordTrack, TrackChunk
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.pipeline.report.svg import ScatterPoint, histogram_svg, nice_ticks, scatter_svg, track_svg


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 3771, 8) == [0, 500, 1000, 1500, 2000, 2500, 3000, 3500]
    assert nice_ticks(0, 14, 4) == [0, 5, 10]
    assert nice_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(5, 5) == [5]


def _chunk(index: int, start: int, end: int, virus: float | None) -> TrackChunk:
    call = None if virus is None else ChunkCall(f"c<{index}>", virus >= 0.5, virus, 1 - virus, 1)
    return TrackChunk(index=index, start=start, end=end, call=call, best_frame_id=f"c<{index}>F1")


def test_a_track_draws_each_chunk_at_its_bases_and_shades_regions() -> None:
    track = RecordTrack("id<1>", 1500, (_chunk(1, 1, 500, 0.9), _chunk(2, 501, 1000, None),
                                        _chunk(3, 1001, 1500, 0.2)))
    region = Region("id<1>", 1, 500, 1, 0.9, 0.9, RegionKind.PROVIRUS)
    svg = track_svg(track, [region], 0.5, width=900, height=150)
    left, right = 48, 900 - 84  # the plot area: 1 px per (1500 / 768) bp
    scale = (right - left) / 1500
    chunk = re.findall(r'<line class="chunk" x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)"', svg)
    assert [(float(a), float(c)) for a, _, c in chunk] == [
        (left, round(left + 500 * scale, 1)), (round(left + 1000 * scale, 1), right)]
    assert float(chunk[0][1]) < float(chunk[1][1])  # 0.9 above 0.2
    assert svg.count('class="unscored"') == 1 and 'class="region provirus"' in svg
    assert "threshold 0.5" in svg and "id&lt;1&gt;" in svg and "c&lt;1&gt;F1" in svg
    assert "<1>" not in svg


def test_histogram_counts_and_scatter_points() -> None:
    svg = histogram_svg("virus", [0.51, 0.52, 0.97], colour="#c0392b", x_label="virus_score")
    assert "(n = 3)" in svg and re.findall(r'class="count"[^>]*>(\d+)<', svg) == ["2", "1"]
    empty = histogram_svg("non-virus", [], colour="#2c7fb8", x_label="virus_score")
    assert "no sequence" in empty
    points = [ScatterPoint(300, 0.0, "non-virus", "a"), ScatterPoint(40_000, 1.0, "virus", "b&c")]
    scatter = scatter_svg(points, threshold=0.5)
    assert scatter.count("<circle") == 2 and "b&amp;c" in scatter
    assert ">200<" in scatter and ">50 kb<" in scatter  # the log axis spans the lengths
