"""What the artifact pages show: per-sample keys in Prefect's alphabet, narrow tables, no bullets."""

from __future__ import annotations

import re

from virnucpro.orchestration.artifacts import (
    EMPTY,
    MEMORY_COLUMNS,
    artifact_key,
    batch_markdown,
    memory_table_rows,
    nightly_markdown,
    sample_key,
)
from virnucpro.orchestration.batch import BatchRecord, NightReport, SampleOutcome
from virnucpro.pipeline.memory import read_checkpoint

KEY = re.compile(r"^[a-z0-9-]+$")
MAX_COLUMNS = 6  # what fits the artifact page at 1600 px without a horizontal scroll bar


def _tables(markdown: str) -> list[list[str]]:
    return [line.split("|")[1:-1] for line in markdown.splitlines() if line.startswith("|")]


def test_keys_are_per_sample_and_valid() -> None:
    assert sample_key("prediction-summary", "/data/Sample_01.fa.gz") == "prediction-summary-sample-01"
    assert artifact_key("batch-summary", "gpu-Node7-0") == "batch-summary-gpu-node7-0"
    assert KEY.match(artifact_key("x", "ü §§ weird..name"))
    assert len(artifact_key("x", "a" * 300)) <= 100


def _night() -> NightReport:
    done = SampleOutcome("/in/s1.fa", "a" * 64, "done", "/out/s1-aaaaaaaaaaaa", records=3,
                         calls={"virus": 2, "non-virus": 1, "no-call": 0}, seconds=4.2,
                         batch_run="batch-gpu-h-0-s1.fa")
    lost = SampleOutcome("/in/s2.fa", "b" * 64, "missing", "/out/s2-bbbbbbbbbbbb",
                         error="lost 3 time(s), the re-dispatch limit")
    batch = BatchRecord("batch-gpu-h-0-s1.fa", "id", "gpu-h-0", 1, ("s1.fa", "s2.fa"), "Crashed",
                        message="lost: no heartbeat for 120 s", model_loads={"gpu0": {"dnabert": 1, "esm": 1}})
    return NightReport("2026-01-01", "t0", "t1", "/in", "/out", "dispatched", (done, lost),
                       model_loads={"batch gpu0": {"dnabert": 1, "esm": 1}}, pools_opened=1,
                       flow_run_id="12345678-aaaa", batches=(batch,))


def test_nightly_summary_is_narrow_and_names_what_is_missing() -> None:
    night = _night()
    text = nightly_markdown(night)
    assert all(len(row) <= MAX_COLUMNS for row in _tables(text))
    assert "1 sample(s) NOT FINISHED" in text
    assert "- `s2.fa`: lost 3 time(s), the re-dispatch limit" in text
    assert "| batch-gpu-h-0-s1.fa | gpu-h-0 | 1 | s1.fa, s2.fa | Crashed |" in text
    assert all(cell.strip() != "-" for row in _tables(text) for cell in row)
    assert night.path_name == "nightly-2026-01-01-12345678.json"  # one file per night run


def test_batch_summary_lists_samples_and_model_loads() -> None:
    night = _night()
    text = batch_markdown(night.samples, {"gpu0": {"dnabert": 1, "esm": 1}}, "gpu-h-0", ["code version mismatch: x"])
    assert "# VirNucPro batch on `gpu-h-0`" in text and "> **code version mismatch: x**" in text
    assert "| s1.fa | aaaaaaaaaaaa | done | 3 | 2 / 1 / 0 | 4.20 |" in text
    assert "gpu0: dnabert 1, esm 1" in text


def test_memory_rows_without_nvml_use_a_dash_not_a_hyphen() -> None:
    rows = memory_table_rows([read_checkpoint("start")])
    assert [tuple(r) for r in rows] == [MEMORY_COLUMNS]
    if rows[0]["used_mib"] is None:  # no NVML here
        assert rows[0]["device"] == EMPTY and rows[0]["note"].startswith("NVML unavailable: ")
