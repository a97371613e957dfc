"""Shared test fixtures. Model fixtures first; other areas may append theirs below."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# One CPU thread per process, here and in every worker process a test spawns (they inherit the
# environment), unless the caller set it. The tiny models gain nothing from threads, and on a
# shared 2-core machine OpenMP's spinning threads made an ESM-2 demo batch cost 10x the CPU time
# (3.2 s vs 0.25 s). Set before anything imports torch (collection imports it below).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Prefect offline and quiet, before any test module imports prefect (unit and integration).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # pool threads log too


# --- models -------------------------------------------------------------------------------


def _find_shared() -> Path | None:
    """``$VIRNUCPRO_SHARED_DIR``, else a ``shared/`` in or beside the repository (or above it).

    CI clones the repo with ``shared/`` beside it; on the device machine a copy travels inside it.
    """
    configured = os.environ.get("VIRNUCPRO_SHARED_DIR")
    if configured:
        return Path(configured) if (Path(configured) / "golden").is_dir() else None
    for folder in (REPO_ROOT, *REPO_ROOT.parents):
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
            f"beside the repository ({REPO_ROOT.parent / 'shared'})"
        )
    return found


@pytest.fixture(scope="session")
def golden_tiny_dir(shared_dir: Path) -> Path:
    """``shared/golden/vanilla-tiny``: the original tool's outputs on tiny real-architecture models."""
    path = shared_dir / "golden" / "vanilla-tiny"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory):  # -> virnucpro.models.demo.DemoModels
    """Tiny random models in the real formats (seed 0), built once per session."""
    from virnucpro.models.demo import make_demo_models

    return make_demo_models(tmp_path_factory.mktemp("demo_models"), seed=0)


@pytest.fixture(scope="session")
def demo_dnabert_dir(demo_models) -> Path:  # type: ignore[no-untyped-def]
    """A DNABERT-S snapshot directory (12 heads, hidden 48) with random weights."""
    return demo_models.dnabert


@pytest.fixture(scope="session")
def demo_esm_checkpoint(demo_models) -> Path:  # type: ignore[no-untyped-def]
    """A fair-esm hub checkpoint of a 36-layer, 16-dim ESM-2 with random weights."""
    return demo_models.esm


# --- GPU marker ----------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Every ``@pytest.mark.gpu`` test is skipped where CUDA is not available (CI, laptops)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU tests run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- xdist: the orchestration package in one test process ------------------------------------


def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """``--dist loadfile``, except that tests/integration/orchestration/ is ONE work unit.

    Its modules share one package-scoped Prefect server (its conftest.py). Spread file by file over
    the test processes, each process that ran one of them started a server of its own, and a
    process that ran them apart (another file in between) started it again: three servers in a
    CI run, each ~16 s of CPU to migrate and start. As one unit, one process runs the package's
    files back to back and the server starts once. Other ``--dist`` modes: xdist's own scheduler.
    """
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class _PackageAsOneFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return ORCHESTRATION_PACKAGE if path.startswith(ORCHESTRATION_PACKAGE + "/") else path

    return _PackageAsOneFile(config, log)


ORCHESTRATION_PACKAGE = "tests/integration/orchestration"
