"""Flow ``virnucpro-predict``: one FASTA / FASTA.gz through prepare → DNABERT-S → ESM-2 → classify → report.

Run it three ways:

- locally, Prefect's ephemeral mode (nothing to start)::

      python flows/predict.py sample.fa.gz --output-dir out --persistent-models

- as a deployment (see ``prefect.yaml`` and ``deployments/README.md``)::

      prefect deployment run 'virnucpro-predict/predict' -p input_fasta=/data/s.fa -p persistent_models=true

- as a subflow, from ``flows/nightly.py``.

With ``persistent_models`` the flow's :class:`GpuTaskRunner` opens one worker pool per run (one
process per GPU, both models loaded once) for both feature tasks; otherwise each feature task
starts workers that load only its model and release it when the stage ends, as the original did.
Between stages, memory-checkpoint tasks read NVML. The run is named ``predict-<input file>`` and
publishes, keyed per sample: a progress artifact per feature stage (frames, rate, ETA), the
``gpu-memory-checkpoints-<sample>`` table, the ``prediction-summary-<sample>`` markdown and a
``report-<sample>`` link to report.html. Outputs equal ``virnucpro predict``'s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Offline defaults before prefect is imported (a script run); a deployment's worker sets its own.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "virnucpro")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# A fresh ephemeral server creates and migrates its database before it answers: ~25 s measured on
# a 2-core machine, over Prefect's default 20-s wait ("Timed out while attempting to connect").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# The flow and the package come from the same checkout, installed or not.
_CHECKOUT = Path(__file__).resolve().parents[1]
if str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

import argparse  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402

from virnucpro.config import RunConfig  # noqa: E402
from virnucpro.orchestration.artifacts import DEMO_WARNING  # noqa: E402
from virnucpro.orchestration.predict_run import predict_in_flow  # noqa: E402
from virnucpro.orchestration.task_runner import GpuTaskRunner  # noqa: E402
from virnucpro.pipeline.finalize import PredictionResult  # noqa: E402
from virnucpro.pipeline.parameters import (  # noqa: E402
    RUN_PARAMETERS,
    add_argparse_option,
    DeviceName,
    PrecisionName,
    PresetName,
    build_config,
    parameters_docstring,
    parse_gpus,
)

__all__ = ["predict_flow", "PREDICT_PARAMETERS", "announce_temporary_server", "main"]

PREDICT_PARAMETERS = tuple(p.name for p in RUN_PARAMETERS)
_D = {p.name: p.default for p in RUN_PARAMETERS}


def _predict(
    input_fasta: Path,
    output_dir: Path | None = None,
    chunk_length: int = _D["chunk_length"],
    persistent_models: bool = _D["persistent_models"],
    dnabert_model: Path | None = None,
    esm_model: Path | None = None,
    classifier: Path | None = None,
    device: DeviceName = _D["device"],
    precision: PrecisionName = _D["precision"],
    gpus: list[int] | None = None,
    toks_per_batch: int | None = None,
    shard_frames: int = _D["shard_frames"],
    resume: bool = _D["resume"],
    preset: PresetName = _D["preset"],
    min_score: float | None = None,
    min_virus_fraction: float | None = None,
    smooth_window: int = _D["smooth_window"],
    max_gap: int = _D["max_gap"],
    min_region_length: int = _D["min_region_length"],
    calibration: Path | None = None,
    embedding_cache: Path | None = None,
) -> PredictionResult:
    config: RunConfig = build_config(dict(locals()))
    return predict_in_flow(config)


# The parameters' help is the run-parameter table's (Prefect shows the docstring's Args in the UI).
_predict.__doc__ = parameters_docstring(
    "Predict viral sequences in ``input_fasta`` (FASTA or FASTA.gz): prepare, DNABERT-S features, "
    "ESM-2 features, classify, report.", PREDICT_PARAMETERS,
)

def _run_name() -> str:
    """``predict-<input file name>``: runs are found by their sample, not a random name."""
    context = FlowRunContext.get()
    parameters = (context.parameters if context is not None else None) or {}
    return f"predict-{Path(str(parameters.get('input_fasta', 'input'))).name}"


predict_flow = flow(
    name="virnucpro-predict",
    task_runner=GpuTaskRunner(),
    flow_run_name=_run_name,
    description="VirNucPro viral sequence prediction of one FASTA/FASTA.gz (DNABERT-S + ESM-2 features).",
    validate_parameters=True,
)(_predict)


# -- python flows/predict.py ------------------------------------------------------------------
def _demo_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("VIRNUCPRO_DEMO_MODELS_DIR", Path(root) / "virnucpro" / "demo-models"))


def _build_demo_models(cache: Path) -> None:
    """Build the demo model set in ``cache`` once (into a temporary sibling, then renamed)."""
    import shutil
    import tempfile

    from virnucpro.models.demo import DEMO_MARKER, make_demo_models

    if not (cache / DEMO_MARKER).is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=cache.parent))
        make_demo_models(staging, seed=0)
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)


def _models_or_demo(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` unchanged when the models are found; else demo models, with a loud warning."""
    from virnucpro.errors import ModelNotFoundError
    from virnucpro.pipeline.plan import resolve_run_models

    try:
        resolve_run_models(build_config(params))
        return params
    except ModelNotFoundError as exc:
        missing = str(exc)
    from virnucpro.models.discovery import ENV_MODELS_DIR, resolve_models

    cache = _demo_cache_dir()
    _build_demo_models(cache)
    demo = resolve_models(None, None, None, int(params["chunk_length"]), environ={ENV_MODELS_DIR: str(cache)})
    banner = "*" * 78
    print(
        f"{banner}\nWARNING: the real model weights were not found:\n{missing}\n\n"
        f"--demo-if-missing: using tiny DEMO MODELS WITH RANDOM WEIGHTS from {cache}.\n"
        "Every call of this run is MEANINGLESS; it only shows the pipeline working.\n"
        f"{banner}",
        file=sys.stderr,
    )
    return {
        **params,
        "dnabert_model": demo.dnabert.path,
        "esm_model": demo.esm.path,
        "classifier": demo.classifier.path,
    }


def announce_temporary_server() -> None:
    """One line before Prefect's "Starting temporary server", which is silent until it answers."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return
    print(
        "No PREFECT_API_URL is set: Prefect starts a temporary local server for this run. It "
        "answers after 20-60 s (it loads its API and, the first time, creates its database in "
        f"{settings.home}); point PREFECT_API_URL at a running server to skip this.",
        file=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python flows/predict.py",
        description="Run the virnucpro-predict Prefect flow on one FASTA/FASTA.gz in ephemeral "
        "mode (no server needed). Each option is the flow parameter of the same name.",
    )
    for name in PREDICT_PARAMETERS:
        add_argparse_option(p, name)
    p.add_argument("--demo-if-missing", action="store_true",
                   help="when model discovery fails, build and use tiny RANDOM demo models "
                   "(meaningless calls; shows the pipeline working)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python flows/predict.py INPUT [options]``: the flow in ephemeral mode; returns the exit code."""
    from virnucpro.domain.disk import disk_error
    from virnucpro.errors import Terminated, VirNucProError
    from virnucpro.pipeline.termination import INTERRUPTED_MESSAGE, TERMINATED_MESSAGE, sigterm_stops

    args = vars(_parser().parse_args(argv))
    demo_if_missing = args.pop("demo_if_missing")
    try:
        gpus = parse_gpus(args["gpus"])
        args["gpus"] = list(gpus) if gpus else None
        with sigterm_stops():  # SIGTERM stops the run like Ctrl-C
            if demo_if_missing:
                args = _models_or_demo(args)
            announce_temporary_server()
            result = predict_flow(**args)
    except VirNucProError as exc:
        print(f"Error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full, read-only or unwritable disk: exit 5
        error = disk_error(exc)
        if error is None:
            raise
        print(f"Error: {type(error).__name__}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Terminated
        terminated = isinstance(exc, Terminated)
        print(TERMINATED_MESSAGE if terminated else INTERRUPTED_MESSAGE, file=sys.stderr)
        return Terminated.exit_code if terminated else 130
    calls = result.report.sequence_calls
    if result.demo_models:
        print(f"WARNING: {DEMO_WARNING}", file=sys.stderr)
    print(
        f"{result.prepared.n_records} sequences: {calls.get('virus', 0)} virus, "
        f"{calls.get('non-virus', 0)} non-virus, {calls.get('no-call', 0)} no-call "
        f"({result.prepared.n_frames} frames in {result.timings.get('total', 0.0):.1f} s)"
    )
    for path in (p for p in result.paths.final_outputs if p.exists()):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
