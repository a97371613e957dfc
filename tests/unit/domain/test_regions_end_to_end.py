"""From a FASTA file to prediction_regions.tsv, prediction_sequences.tsv, virus.fna, provirus.fna.

The frame scores are constructed (no model): frames of chunks lying mostly inside a known
"prophage" stretch of a host contig score P(virus) 0.9, the others 0.1. The pipeline wiring is
not part of this test; every domain step between the input and the files is.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from virnucpro.domain.calls import SequenceCallLabel, call_track, track_of
from virnucpro.domain.fasta import read_fasta
from virnucpro.domain.handoff import write_handoff_fasta
from virnucpro.domain.prepare import iter_frames
from virnucpro.domain.records import FrameScore
from virnucpro.domain.regions import RegionKind, RegionOptions, find_regions
from virnucpro.domain.tables import (
    read_regions,
    read_sequence_calls,
    write_regions,
    write_sequence_calls,
)
from virnucpro.domain.thresholds import resolve_thresholds

PROPHAGE = (6001, 10000)  # 1-based inclusive, inside the 16 kb host contig
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
         if a + b + c not in ("TAA", "TAG", "TGA")]


def _coding(rng: random.Random, n_bases: int) -> str:
    """Random sense codons: frame 1 of every chunk is stop-free, so every chunk is scored."""
    return "".join(rng.choice(SENSE) for _ in range(n_bases // 3 + 1))[:n_bases]


def _write_input(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    rng = random.Random(42)
    sequences = {"host_contig": _coding(rng, 16000), "phage_read": _coding(rng, 1800)}
    path = tmp_path / "sample.fa"
    path.write_text(
        ">host_contig Bacillus sp. contig 7\n" + sequences["host_contig"] + "\n"
        ">phage_read a phage\n" + sequences["phage_read"] + "\n"
    )
    return path, sequences


def _virus_p(record_id: str, start: int, end: int) -> float:
    if record_id == "phage_read":
        return 0.9
    inside = max(0, min(end, PROPHAGE[1]) - max(start, PROPHAGE[0]) + 1)
    return 0.9 if inside >= (end - start + 1) / 2 else 0.1


@pytest.mark.parametrize("chunk_length", [300, 500])
def test_a_prophage_in_a_host_contig_end_to_end(tmp_path: Path, chunk_length: int) -> None:
    input_path, sequences = _write_input(tmp_path)
    records = list(read_fasta(input_path))
    descriptions = {r.id: r.description for r in records}
    thresholds = resolve_thresholds("default")
    calls, regions = [], []
    for record in iter_frames(records, chunk_length):
        scores = {}
        for chunk in record.chunks:
            start = chunk.chunk.start + 1
            p = _virus_p(record.record_id, start, start + len(chunk.chunk.sequence) - 1)
            scores.update({f.id: FrameScore(f.id, 1.0 - p, p) for f in chunk.frames})
        track = track_of(record, scores, descriptions[record.record_id])
        call = call_track(track, thresholds)
        calls.append(call)
        regions.extend(find_regions(track, call, thresholds, RegionOptions()))

    host, phage = calls
    assert host.call is SequenceCallLabel.NON_VIRUS and phage.call is SequenceCallLabel.VIRUS
    assert host.description == "Bacillus sp. contig 7"
    whole, provirus = sorted(regions, key=lambda r: r.kind.value, reverse=True)
    assert (whole.sequence_id, whole.start, whole.end, whole.kind) == (
        "phage_read", 1, 1800, RegionKind.WHOLE
    )
    assert provirus.sequence_id == "host_contig" and provirus.kind is RegionKind.PROVIRUS
    assert abs(provirus.start - PROPHAGE[0]) < chunk_length
    assert abs(provirus.end - PROPHAGE[1]) < chunk_length
    assert provirus.mean_virus_score == pytest.approx(0.9)

    write_sequence_calls(tmp_path / "prediction_sequences.tsv", calls)
    write_regions(tmp_path / "prediction_regions.tsv", regions)
    assert read_regions(tmp_path / "prediction_regions.tsv") == regions
    back = read_sequence_calls(tmp_path / "prediction_sequences.tsv")
    assert [c.virus_score for c in back] == [pytest.approx(c.virus_score, rel=1e-5) for c in calls]

    write_handoff_fasta(
        input_path,
        virus_ids=[c.record_id for c in calls if c.call is SequenceCallLabel.VIRUS],
        regions=regions,
        virus_path=tmp_path / "virus.fna",
        provirus_path=tmp_path / "provirus.fna",
    )
    (virus,) = read_fasta(tmp_path / "virus.fna")
    assert (virus.id, virus.description, virus.sequence) == (
        "phage_read", "a phage", sequences["phage_read"]
    )
    (region_record,) = read_fasta(tmp_path / "provirus.fna")
    assert region_record.id == f"host_contig|provirus_{provirus.start}_{provirus.end}"
    assert region_record.sequence == sequences["host_contig"][provirus.start - 1 : provirus.end]


def test_conservative_thresholds_keep_only_the_strong_region(tmp_path: Path) -> None:
    input_path, _ = _write_input(tmp_path)
    records = list(read_fasta(input_path))
    (host,) = iter_frames(records[:1], 500)
    # the prophage scores 0.65 here: viral by the original rule, not for `conservative` (0.7)
    scores = {}
    for chunk in host.chunks:
        start = chunk.chunk.start + 1
        p = 0.65 if _virus_p("host_contig", start, start + 499) > 0.5 else 0.1
        scores.update({f.id: FrameScore(f.id, 1.0 - p, p) for f in chunk.frames})
    track = track_of(host, scores)
    default = resolve_thresholds("default")
    conservative = resolve_thresholds("conservative")
    assert len(find_regions(track, call_track(track, default), default)) == 1
    assert find_regions(track, call_track(track, conservative), conservative) == []
