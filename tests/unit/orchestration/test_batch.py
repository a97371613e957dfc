"""scan_inbox: which inbox files are samples."""

from __future__ import annotations

import gzip
from pathlib import Path

from virnucpro.orchestration.batch import scan_inbox


def _inbox(folder: Path) -> Path:
    """Three samples (plain .fa, .fasta, gzip), a note and a hidden partial upload."""
    folder.mkdir()
    (folder / "a.fa").write_text(">a\nACGTACGTAC\n")
    (folder / "b.fasta").write_text(">b\nTTGCAAGGCT\n")
    with gzip.open(folder / "c.fa.gz", "wt") as handle:
        handle.write(">c\nGGGCCCAAAT\n")
    (folder / "notes.txt").write_text("not a sample\n")
    (folder / ".d.fa.partial").write_text(">d\nACGT\n")
    return folder


def test_pattern_selects_the_samples(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path / "inbox")
    scan = scan_inbox(inbox, tmp_path / "outbox", ["*.fasta", "*.gz"])
    assert [s.name for s in scan.pending] == ["b.fasta", "c.fa.gz"]
    default = scan_inbox(inbox, tmp_path / "outbox")  # notes.txt and hidden files are no samples
    assert [s.name for s in default.pending] == ["a.fa", "b.fasta", "c.fa.gz"]
