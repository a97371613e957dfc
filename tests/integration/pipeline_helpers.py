"""Small helpers shared by the pipeline integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from virnucpro.config import DeviceKind, ModelPaths, RunConfig

__all__ = ["write_sample", "cpu_config", "feature_matrix", "read_text", "proc_alive"]


def write_sample(source: Path, out: Path, n_records: int, gz: bool = False) -> Path:
    """The first ``n_records`` records of a FASTA file, as a new (optionally gzipped) file."""
    text = source.read_text()
    records = [">" + r for r in text.split(">")[1:]][:n_records]
    data = "".join(records)
    if gz:
        with gzip.open(out, "wt") as handle:
            handle.write(data)
    else:
        out.write_text(data)
    return out


def cpu_config(input_fasta: Path, output_dir: Path, demo, **overrides) -> RunConfig:  # type: ignore[no-untyped-def]
    values = dict(
        input_fasta=input_fasta,
        output_dir=output_dir,
        chunk_length=500,
        models=ModelPaths(dnabert=demo.dnabert, esm=demo.esm, classifier=demo.classifier(500)),
        device=DeviceKind.CPU,
    )
    values.update(overrides)
    return RunConfig(**values)


def feature_matrix(output_dir: Path, stage: str) -> dict[str, np.ndarray]:
    """Every frame's embedding of one stage, keyed by frame ID."""
    out: dict[str, np.ndarray] = {}
    for path in sorted((output_dir / ".virnucpro_work" / "features" / stage).glob("*.npz")):
        with np.load(path) as data:
            for frame_id, row in zip(data["ids"], data["emb"]):
                out[str(frame_id)] = row
    return out


def read_text(path: Path) -> str:
    return path.read_text()


def proc_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    except OSError:
        return False
    return False
