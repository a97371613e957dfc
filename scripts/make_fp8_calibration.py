"""Write ``virnucpro/data/fp8_calibration_proteins.txt``: the proteins ``--precision fp8`` calibrates on.

    python scripts/make_fp8_calibration.py [--genome ../shared/data/real/Klebs_Kp1084.fna.xz]

FP8's bias correction (:mod:`virnucpro.models.fast.fp8`) needs each GEMM's mean input row, which
a bf16 forward over a fixed set of real proteins gives. The set: 64 kept frames of 500-bp chunks
spread evenly over Klebsiella pneumoniae Kp1084 (a public RefSeq genome, ``shared/data/real``),
a genome the benchmark's sample does not use (it cuts HS11286 and three viruses), so the
benchmark's agreement rows do not test on the proteins FP8 calibrated on. The file is committed;
this script records how it was made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sample import frames_of, read_genome  # noqa: E402

OUT = ROOT / "virnucpro" / "data" / "fp8_calibration_proteins.txt"
COUNT = 64


GENOME = ROOT.parent / "shared" / "data" / "real" / "Klebs_Kp1084.fna.xz"


def pick_proteins(genome: Path, count: int) -> tuple[str, list[str]]:
    """``count`` distinct kept frames (>= 100 residues) of 500-bp chunks spread evenly over the
    genome's longest record: (that record's name, the proteins)."""
    records = read_genome(genome)
    chromosome = max(records, key=lambda r: len(r[1]))
    step = len(chromosome[1]) // (count * 4)
    pieces = [(f"{chromosome[0]}_{i * step}", chromosome[1][i * step : i * step + 500]) for i in range(count * 4)
              if i * step + 500 <= len(chromosome[1])]
    proteins: list[str] = []
    for frame in frames_of(pieces, 500):
        if len(frame.protein) >= 100 and len(proteins) < count and all(frame.protein != p for p in proteins):
            proteins.append(frame.protein)
    return chromosome[0], proteins


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--genome", type=Path, default=GENOME)
    args = p.parse_args()
    name, proteins = pick_proteins(args.genome, COUNT)
    if len(proteins) < COUNT:
        raise SystemExit(f"{args.genome}: only {len(proteins)} usable frames, {COUNT} needed")
    header = (f"# --precision fp8 calibration: {COUNT} kept frames (500-bp chunks, >= 100 residues) spread over\n"
              f"# {name} of {args.genome.name} (Klebsiella pneumoniae Kp1084); "
              "made by scripts/make_fp8_calibration.py\n")
    OUT.write_text(header + "\n".join(proteins) + "\n")
    print(f"wrote {OUT} ({len(proteins)} proteins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
