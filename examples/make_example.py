"""How examples/example.fa.gz was made: 24 fragments (400–3,000 bp) of the real genomes in
shared/data/real (phage lambda, DWV, VDV1, Klebsiella pneumoniae HS11286), both strands,
numpy default_rng(2026). Run: python examples/make_example.py ../shared/data/real examples/example.fa.gz
"""

from __future__ import annotations

import gzip
import lzma
import sys
from pathlib import Path

import numpy as np


def _read(path: Path) -> dict[str, str]:
    opener = gzip.open if path.suffix == ".gz" else lzma.open if path.suffix == ".xz" else open
    records: dict[str, list[str]] = {}
    name = None
    with opener(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:].split()[0]
                records[name] = []
            elif name:
                records[name].append(line)
    return {k: "".join(v).upper() for k, v in records.items()}


def _revcomp(seq: str) -> str:
    return seq.translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


def main(real: Path, out: Path) -> None:
    rng = np.random.default_rng(2026)
    plan = [("lambda_virus.fa.gz", "lambda", 6), ("dwv.fasta.gz", "DWV", 5),
            ("vdv1.fasta.gz", "VDV1", 5), ("Klebs_HS11286.fna.xz", "HS11286", 8)]
    lines = []
    for file, label, count in plan:
        genomes = _read(real / file)
        name, genome = max(genomes.items(), key=lambda kv: len(kv[1]))
        for i in range(count):
            length = int(rng.integers(400, 3001))
            start = int(rng.integers(0, len(genome) - length))
            strand = "+" if rng.random() < 0.5 else "-"
            frag = genome[start:start + length]
            if strand == "-":
                frag = _revcomp(frag)
            lines.append(f">{label}_frag_{i + 1} {name}:{start}-{start + length}({strand}) len={length}")
            lines.extend(frag[j:j + 70] for j in range(0, len(frag), 70))
    with gzip.open(out, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
