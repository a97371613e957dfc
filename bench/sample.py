"""The benchmark's sample: fragments cut from the real genomes in ``bench/data``."""

from __future__ import annotations

import gzip
import lzma
import math
import random
from pathlib import Path
from typing import Any

__all__ = ["DATA", "BACTERIA", "VIRUSES", "read_genome", "make_sample", "write_fasta", "frames_of"]

DATA = Path(__file__).resolve().parent / "data"
BACTERIA = ("Klebs_HS11286.fna.xz",)
VIRUSES = ("lambda_virus.fa.gz", "dwv.fasta.gz", "vdv1.fasta.gz")


def read_genome(path: Path) -> list[tuple[str, str]]:
    """(id, sequence) records of a plain, gzip or xz FASTA file."""
    opener = lzma.open if path.suffix == ".xz" else gzip.open if path.suffix == ".gz" else open
    records: list[tuple[str, str]] = []
    name, parts = None, []
    with opener(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(parts)))
                name, parts = line[1:].split()[0], []
            elif line.strip():
                parts.append(line.strip())
    if name is not None:
        records.append((name, "".join(parts)))
    return records


_COMPLEMENT = str.maketrans("ACGTacgt", "TGCAtgca")


def make_sample(n_chunks: int, seed: int, chunk_length: int = 500, viral_share: float = 0.2,
                data_dir: Path = DATA) -> list[tuple[str, str]]:
    """Fragments (id, sequence) cut from the real genomes until they make ``n_chunks`` chunks.

    Lengths log-uniform in 300..3000 bp; each fragment from a random position of a random record
    (weighted by length), reverse-complemented half the time; ``viral_share`` of them viral.
    """
    rng = random.Random(seed)
    pools = {
        "bacterial": [r for name in BACTERIA for r in read_genome(data_dir / name)],
        "viral": [r for name in VIRUSES for r in read_genome(data_dir / name)],
    }
    fragments: list[tuple[str, str]] = []
    chunks = 0
    while chunks < n_chunks:
        kind = "viral" if rng.random() < viral_share else "bacterial"
        records = pools[kind]
        rec_id, seq = rng.choices(records, weights=[len(s) for _, s in records])[0]
        length = min(len(seq), int(math.exp(rng.uniform(math.log(300), math.log(3000)))))
        start = rng.randrange(0, len(seq) - length + 1)
        piece = seq[start : start + length]
        if rng.random() < 0.5:
            piece = piece.translate(_COMPLEMENT)[::-1]
        fragments.append((f"{kind}_{len(fragments):06d}_{rec_id}_{start}", piece))
        chunks += -(-length // chunk_length)
    return fragments


def write_fasta(path: Path, fragments: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for name, seq in fragments:
            handle.write(f">{name}\n")
            for i in range(0, len(seq), 60):
                handle.write(seq[i : i + 60] + "\n")
    return path


def frames_of(fragments: list[tuple[str, str]], chunk_length: int) -> list[Any]:
    """The pipeline's kept frames (``Frame``) of the fragments at ``chunk_length``."""
    from virnucpro.domain.prepare import iter_frames
    from virnucpro.domain.records import SequenceRecord

    records = (SequenceRecord(name, "", seq) for name, seq in fragments)
    return [f for rec in iter_frames(records, chunk_length) for f in rec.frames]
