"""The domain layer stays pure Python: no torch, no prefect, nothing heavy at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOMAIN_MODULES = [
    "atomic",
    "calibration",
    "calls",
    "checksums",
    "chunking",
    "disk",
    "fasta",
    "fasta_reread",
    "handoff",
    "outputs",
    "prepare",
    "records",
    "regions",
    "tables",
    "thresholds",
    "translation",
]


def test_domain_imports_neither_torch_nor_prefect() -> None:
    imports = "; ".join(f"import virnucpro.domain.{name}" for name in DOMAIN_MODULES)
    heavy = ("torch", "prefect", "transformers", "esm")
    check = f"import sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", f"{imports}; {check}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert result.stdout.strip() == "[]"


def test_every_public_name_exists() -> None:
    import importlib

    for name in DOMAIN_MODULES:
        module = importlib.import_module(f"virnucpro.domain.{name}")
        for public in module.__all__:
            assert hasattr(module, public), f"virnucpro.domain.{name}.{public}"
