"""Which checkout a deployment's run executes, and which code version that is.

- :func:`enter_checkout` is the deployments' pull step (``prefect.yaml``). A worker started the
  plain Prefect way (``prefect worker start --pool virnucpro-gpu``) has no ``VIRNUCPRO_HOME``;
  the step then uses the checkout the installed ``virnucpro`` package lives in (an editable
  install, or ``PYTHONPATH`` pointing into a checkout). When neither gives a checkout with the
  flows, the run fails at once with a message naming what to set, instead of a
  ``FileNotFoundError`` deep in a traceback.
- :func:`code_version` is ``<virnucpro.__version__>`` plus the checkout's git commit (and
  ``-dirty`` with uncommitted changes to tracked files). ``prefect deploy`` records it as each
  deployment's ``version`` (a build step runs ``python -m virnucpro.orchestration.checkout``);
  a run compares it with the code it actually runs (:func:`version_mismatch`).

No Prefect import: pull steps run before the flow run's engine starts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import virnucpro
from virnucpro.errors import ConfigError

__all__ = ["HOME_VARIABLE", "FLOW_FILES", "find_checkout", "enter_checkout", "code_version",
           "version_mismatch", "main"]

logger = logging.getLogger(__name__)

HOME_VARIABLE = "VIRNUCPRO_HOME"
FLOW_FILES = ("flows/predict.py", "flows/batch.py", "flows/nightly.py")
"""What a checkout must hold for the deployments' entrypoints."""


def _is_checkout(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FLOW_FILES)


def _package_checkout() -> Path:
    """The folder above the imported ``virnucpro`` package (a checkout if installed editable)."""
    return Path(virnucpro.__file__).resolve().parents[1]


def find_checkout(environ: dict[str, str] | None = None) -> Path:
    """``$VIRNUCPRO_HOME`` if set, else the installed package's checkout; ConfigError if neither
    holds the flows."""
    env = os.environ if environ is None else environ
    configured = env.get(HOME_VARIABLE, "").strip()
    if configured:
        home = Path(configured).expanduser().resolve()
        if not _is_checkout(home):
            raise ConfigError(
                f"{HOME_VARIABLE}={configured} is not a VirNucPro checkout (no {FLOW_FILES[0]} "
                f"there); point {HOME_VARIABLE} at the checkout the worker should run, or unset it "
                "to use the installed package's checkout"
            )
        return home
    installed = _package_checkout()
    if _is_checkout(installed):
        return installed
    raise ConfigError(
        f"cannot find the VirNucPro flows: {HOME_VARIABLE} is not set and the installed virnucpro "
        f"package ({installed / 'virnucpro'}) is not inside a checkout (no {FLOW_FILES[0]} beside "
        f"it). Start the worker with {HOME_VARIABLE}=/path/to/virnucpro-checkout (export it, use "
        "deployments/start-worker.sh, or set it in the work pool's env job variable), or install "
        "the package from a checkout with pip install -e"
    )


def enter_checkout() -> dict[str, str]:
    """Pull step: change into the checkout (see :func:`find_checkout`) and return it as the
    run's working ``directory``; the checkout is put first on ``sys.path`` so its package runs."""
    try:
        home = find_checkout()
    except ConfigError as exc:
        _fail_run(str(exc))
        raise
    os.chdir(home)
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    return {"directory": str(home)}


def _fail_run(message: str) -> None:
    """Put a pull-step error in the flow run's logs and state message (the step runs before the
    engine does, and the worker does not stream the process's stderr)."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id:
        return
    try:  # imported here: a pull step must not need Prefect to raise a plain error
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.logging.handlers import APILogHandler
        from prefect.states import Failed

        record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, message, None, None)
        record.flow_run_id = UUID(run_id)
        APILogHandler().emit(record)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), Failed(message=message), force=True)
    except Exception as exc:  # the error itself is raised anyway
        logger.debug("could not report the pull-step error to the flow run: %r", exc)


def _git(root: Path, *args: str) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root: Path | None = None) -> str:
    """``0.1.0``, ``0.1.0 git 1a2b3c4d5e6f`` or ``0.1.0 git 1a2b3c4d5e6f-dirty`` of the code at
    ``root`` (default: the imported package's checkout)."""
    root = _package_checkout() if root is None else Path(root)
    version = virnucpro.__version__
    commit = _git(root, "rev-parse", "--short=12", "HEAD")
    if commit is None:
        return version
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return f"{version} git {commit}{'-dirty' if dirty else ''}"


def version_mismatch(deployed: str | None, running: str) -> str | None:
    """The warning a run gives when its code is not the code its deployment was made from."""
    if not deployed or deployed == running:
        return None
    return (f"code version mismatch: the deployment was made from virnucpro {deployed}, but this "
            f"worker runs virnucpro {running}; update the worker's checkout (or re-deploy) so "
            "every host runs the same code")


def main() -> int:
    """``python -m virnucpro.orchestration.checkout``: print :func:`code_version` (the deploy
    build step)."""
    sys.stdout.write(code_version() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
