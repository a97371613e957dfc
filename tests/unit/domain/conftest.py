"""Fixtures of the domain tests: where the shared golden files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]


def _find_shared() -> Path | None:
    """``$VIRNUCPRO_SHARED_DIR``, else a ``shared/`` in or beside the repository (or above it)."""
    configured = os.environ.get("VIRNUCPRO_SHARED_DIR")
    if configured:
        return Path(configured) if (Path(configured) / "golden").is_dir() else None
    for folder in (_REPO_ROOT, *_REPO_ROOT.parents):
        if (folder / "shared" / "golden").is_dir():
            return folder / "shared"
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's ``shared/`` folder (golden files, real data); skips the test when absent."""
    found = _find_shared()
    if found is None:
        pytest.skip(
            "shared/ with golden files not found: set VIRNUCPRO_SHARED_DIR or place shared/ "
            f"beside the repository ({_REPO_ROOT.parent / 'shared'})"
        )
    return found
