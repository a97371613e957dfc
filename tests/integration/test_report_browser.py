"""report.html in a real headless browser (Chromium): the page loads offline, its tracks, plots
and table are in the rendered DOM, the table script ran (sorting and filtering), user strings are
escaped, and a screenshot is taken. Skipped where Chromium is not installed (``scripts/setup.sh``
installs it when run as root on a machine with apt-get)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.conftest import HOSTILE_DESCRIPTION, HOSTILE_ID, DemoRun
from virnucpro.domain.tables import read_sequence_calls

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed (scripts/setup.sh installs it as root)"
)
WINDOW = (1400, 2000)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
        capture_output=True, text=True, timeout=180,
    )


class _Dom(HTMLParser):
    """What the tests read from a dumped DOM: elements by tag, the body's attributes, the rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.body: dict[str, str | None] = {}
        self.rows: list[dict[str, str | None]] = []
        self.track_divs = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "body":
            self.body = attributes
        elif tag == "tr" and "data-call" in attributes:
            self.rows.append(attributes)
        elif tag == "div" and attributes.get("class") == "track":
            self.track_divs += 1


def _dom(tmp_path: Path, url: str) -> tuple[_Dom, str]:
    done = _chromium(tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    return _Dom(done.stdout), done.stdout


@pytest.fixture(scope="module")
def report(demo_run: DemoRun) -> Path:
    return demo_run.output_dir / "report.html"


def test_the_page_renders_its_tracks_plots_and_table(report: Path, demo_run: DemoRun, tmp_path: Path) -> None:
    dom, text = _dom(tmp_path, report.as_uri())
    calls = read_sequence_calls(demo_run.output_dir / "prediction_sequences.tsv")
    scored = [c for c in calls if c.virus_score is not None]
    assert dom.body.get("data-tables-ready") == str(len(calls))  # the script ran to its end
    assert len(dom.rows) == len(calls) and not any("hidden" in r for r in dom.rows)
    assert dom.track_divs == len(scored)  # fewer than the 30 drawn at most: every scored one
    assert dom.tags["svg"] == len(scored) + 3  # the tracks, two histograms, the scatter plot
    assert dom.tags.get("line", 0) > len(scored) and dom.tags.get("circle", 0) == len(scored)
    for name in ("prediction_results.txt", "prediction_sequences.tsv", "prediction_regions.tsv",
                 "virus.fna", "provirus.fna", "run_info.json"):
        assert f'href="{name}"' in text
    assert "DEMO MODELS WITH RANDOM WEIGHTS" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing loaded from outside


def test_user_strings_are_escaped(report: Path, tmp_path: Path) -> None:
    dom, text = _dom(tmp_path, report.as_uri())
    assert dom.tags["script"] == 1  # the page's own; the description's <script> is text
    assert "odd&lt;id&gt;&amp;co" in text and "&lt;script&gt;alert" in text
    assert HOSTILE_ID not in text and HOSTILE_DESCRIPTION not in text


def test_sorting_and_filtering_from_the_address(report: Path, demo_run: DemoRun, tmp_path: Path) -> None:
    calls = read_sequence_calls(demo_run.output_dir / "prediction_sequences.tsv")
    longest = max(calls, key=lambda c: c.length)
    dom, text = _dom(tmp_path, report.as_uri() + "#sort=length&dir=desc")
    first_row = text.split('<tr data-call="', 2)[1]
    assert f">{longest.record_id}<" in first_row
    assert 'data-key="length" data-type="num" title="sort" aria-sort="descending"' in text
    dom, _ = _dom(tmp_path, report.as_uri() + f"#filter={calls[3].record_id}")
    assert sum("hidden" not in r for r in dom.rows) == sum(calls[3].record_id in c.record_id for c in calls)
    dom, _ = _dom(tmp_path, report.as_uri() + "#call=no-call")
    shown = [r for r in dom.rows if "hidden" not in r]
    assert shown and all(r["data-call"] == "no-call" for r in shown)
    assert len(shown) == sum(c.call.value == "no-call" for c in calls)


def test_a_screenshot_of_the_page(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    done = _chromium(tmp_path, f"--screenshot={png}", "--hide-scrollbars", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == WINDOW
    assert len(data) > 50_000  # a drawn page, not a blank one (a blank 1400x2000 PNG is ~10 kB)
