"""The night report: a row per sample with its report link, and the drift against earlier nights
read back from their JSON files in the outbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnucpro.orchestration.batch import NightReport, SampleOutcome, write_night_report
from virnucpro.orchestration.night_report import (
    drift,
    html_path,
    night_figures,
    read_earlier_nights,
    render_night_report,
    write_night_html,
)


def _sample(outbox: Path, name: str, virus: int, no_call: int, records: int, frames: int,
            seconds: float, status: str = "done", error: str | None = None) -> SampleOutcome:
    out = outbox / f"{name}-0123456789ab"
    return SampleOutcome(
        file=f"/inbox/{name}.fa", sha256="0123456789ab" + "0" * 52, status=status,  # type: ignore[arg-type]
        output_dir=str(out), records=records, frames=frames,
        calls={"virus": virus, "non-virus": records - virus - no_call, "no-call": no_call},
        seconds=seconds if status == "done" else None, error=error,
    )


def _night(outbox: Path, date: str, samples: tuple[SampleOutcome, ...]) -> NightReport:
    return NightReport(date=date, started=f"{date}T02:00:00+00:00", finished=f"{date}T03:00:00+00:00",
                       inbox="/inbox", outbox=str(outbox), mode="persistent pool", samples=samples)


def test_figures_are_over_tonights_finished_samples(tmp_path: Path) -> None:
    night = _night(tmp_path, "2026-03-02", (
        _sample(tmp_path, "a", virus=10, no_call=5, records=50, frames=1000, seconds=10.0),
        _sample(tmp_path, "b", virus=30, no_call=5, records=50, frames=3000, seconds=30.0),
        _sample(tmp_path, "c", virus=50, no_call=0, records=50, frames=9, seconds=1.0, status="already-done"),
    ))
    figures = night_figures(night)
    assert (figures.samples, figures.sequences) == (2, 100)
    assert figures.virus_fraction == pytest.approx(0.4)
    assert figures.no_call_rate == pytest.approx(0.1)
    assert figures.frames_per_s == pytest.approx(100.0)


def test_drift_against_the_mean_of_earlier_nights_read_from_the_outbox(tmp_path: Path) -> None:
    for date, virus in (("2026-02-27", 20), ("2026-02-28", 30), ("2026-03-01", 40)):
        write_night_report(_night(tmp_path, date, (
            _sample(tmp_path, f"s{date}", virus=virus, no_call=10, records=100, frames=500, seconds=10.0),
        )))
    (tmp_path / "nightly-2026-02-26.json").write_text("{not json")  # skipped, with a warning
    later = _night(tmp_path, "2026-03-09", ())
    write_night_report(later)  # started after tonight: not an earlier night
    tonight = _night(tmp_path, "2026-03-02", (
        _sample(tmp_path, "new", virus=45, no_call=20, records=100, frames=1200, seconds=10.0),
    ))
    write_night_report(tonight)
    earlier = read_earlier_nights(tmp_path, tonight)
    assert [n.date for n in earlier] == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert read_earlier_nights(tmp_path, tonight, limit=2)[0].date == "2026-02-28"
    rows = {d.name: d for d in drift(tonight, earlier)}
    assert rows["virus_fraction"].earlier_mean == pytest.approx(0.3)
    assert rows["virus_fraction"].delta == pytest.approx(0.15)
    assert rows["no_call_rate"].delta == pytest.approx(0.1)
    assert rows["frames_per_s"].tonight == pytest.approx(120.0)
    assert rows["frames_per_s"].delta == pytest.approx(70.0)

    path = write_night_html(tonight)
    assert path == html_path(tonight) == tmp_path / "nightly-2026-03-02.html"
    text = path.read_text()
    assert "mean of 3 earlier" in text and "+15.0 pp" in text and "+70.0" in text
    assert "2026-02-27" in text and "2026-03-09" not in text


def test_a_row_per_sample_with_its_report_link_and_escaped_names(tmp_path: Path) -> None:
    done = _sample(tmp_path, "a<b>", virus=3, no_call=1, records=10, frames=40, seconds=4.0)
    (Path(done.output_dir)).mkdir(parents=True)
    (Path(done.output_dir) / "report.html").write_text("<html></html>")
    failed = _sample(tmp_path, "bad", virus=0, no_call=0, records=0, frames=0, seconds=0.0,
                     status="failed", error="InputError: bad.fa: line 3 <not FASTA>")
    night = _night(tmp_path, "2026-03-02", (done, failed))
    text = render_night_report(night, [])
    assert '<a href="a%3Cb%3E-0123456789ab/report.html">report.html</a>' in text  # relative
    assert "a&lt;b&gt;.fa" in text and "a<b>" not in text
    assert "&lt;not FASTA&gt;" in text
    assert "30.0 %" in text and "10.0 %" in text and "10.0" in text  # virus fraction, no-call, frames/s
    assert "1 sample(s) FAILED" in text
    assert "No earlier night in this outbox" in text
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")  # self-contained


def test_a_night_json_of_another_version_still_reads(tmp_path: Path) -> None:
    night = _night(tmp_path, "2026-03-01", (
        _sample(tmp_path, "a", virus=1, no_call=0, records=2, frames=4, seconds=1.0),
    ))
    data = night.to_dict()
    data["a_field_of_a_later_version"] = 1
    data["samples"][0]["another_new_field"] = "x"
    (tmp_path / "nightly-2026-03-01.json").write_text(json.dumps(data))
    tonight = _night(tmp_path, "2026-03-02", ())
    (earlier,) = read_earlier_nights(tmp_path, tonight)
    assert earlier.samples[0].calls["virus"] == 1
