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
Between stages, memory-checkpoint tasks read NVML; the run publishes the ``gpu-memory-checkpoints``
table and the ``prediction-summary`` markdown artifacts. Outputs equal ``virnucpro predict``'s.
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
import dataclasses  # noqa: E402
import time  # noqa: E402
from typing import Literal  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402

from virnucpro.pipeline.output_lock import output_lock  # noqa: E402
from virnucpro.config import (  # noqa: E402
    CHUNK_LENGTHS,
    DEFAULT_CHUNK_LENGTH,
    DeviceKind,
    ModelPaths,
    Precision,
    RunConfig,
)
from virnucpro.orchestration.artifacts import (  # noqa: E402
    DEMO_WARNING,
    publish_memory_checkpoints,
    publish_prediction_summary,
)
from virnucpro.orchestration.task_runner import GpuTaskRunner  # noqa: E402
from virnucpro.orchestration.tasks import (  # noqa: E402
    classify,
    dnabert_features,
    esm_features,
    finalize,
    memory_checkpoint,
    model_checksums,
    prepare,
    report,
    resolve_plan,
)
from virnucpro.pipeline.memory import MemoryCheckpoint  # noqa: E402
from virnucpro.pipeline.prediction import PredictionResult  # noqa: E402

__all__ = ["predict_flow", "build_config", "run_stages", "default_output_dir", "main"]

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]


def default_output_dir(input_fasta: Path) -> Path:
    """``<input name>_virnucpro`` next to the input (a deployment's working directory is arbitrary)."""
    from virnucpro.domain.outputs import input_stem

    return Path(input_fasta).parent / f"{input_stem(input_fasta)}_virnucpro"


def build_config(
    input_fasta: Path,
    output_dir: Path | None = None,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    persistent_models: bool = _DEFAULTS["persistent_models"],
    dnabert_model: Path | None = None,
    esm_model: Path | None = None,
    classifier: Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    gpus: list[int] | None = None,
    toks_per_batch: int | None = None,
    shard_frames: int = _DEFAULTS["shard_frames"],
    resume: bool = _DEFAULTS["resume"],
) -> RunConfig:
    """The flow's parameters as the one config tree the CLI builds too."""
    input_fasta = Path(input_fasta).expanduser()
    return RunConfig(
        input_fasta=input_fasta,
        output_dir=Path(output_dir).expanduser() if output_dir else default_output_dir(input_fasta),
        chunk_length=int(chunk_length),
        models=ModelPaths(
            dnabert=Path(dnabert_model).expanduser() if dnabert_model else None,
            esm=Path(esm_model).expanduser() if esm_model else None,
            classifier=Path(classifier).expanduser() if classifier else None,
        ),
        device=DeviceKind.parse(device),
        precision=Precision.parse(precision),
        gpus=tuple(gpus) if gpus else None,
        persistent_models=bool(persistent_models),
        toks_per_batch=toks_per_batch,
        shard_frames=shard_frames,
        resume=resume,
    )


def run_stages(config: RunConfig) -> PredictionResult:
    """The stages as tasks, in order, with memory checkpoints between them; publishes artifacts.

    The output directory is locked for the whole run (one run per directory).
    """
    with output_lock(config.output_dir):
        return _run_stages_locked(config)


def _run_stages_locked(config: RunConfig) -> PredictionResult:
    started = time.time()
    checkpoints: list[MemoryCheckpoint] = [memory_checkpoint.submit("start").result()]
    try:
        plan = resolve_plan.submit(config).result()
        checksums = model_checksums.submit(plan)  # hashes the model files beside the stages
        prepared = prepare.submit(config).result()
        timings: dict[str, float] = {"prepare": prepared.seconds}
        dnabert = dnabert_features.submit(plan, prepared).result()
        timings["dnabert"] = dnabert.seconds
        checkpoints.append(memory_checkpoint.submit("after-dnabert", dnabert.worker_peak_mib).result())
        esm = esm_features.submit(plan, prepared).result()
        timings["esm"] = esm.seconds
        checkpoints.append(memory_checkpoint.submit("after-esm", esm.worker_peak_mib).result())
        classified = classify.submit(plan, prepared).result()
        timings["classify"] = classified.seconds
        reported = report.submit(prepared).result()
        timings["report"] = reported.seconds
        checkpoints.append(memory_checkpoint.submit("end").result())
        result = finalize.submit(
            plan, prepared, (dnabert, esm), classified, reported, tuple(checkpoints), timings,
            checksums.result(), started,
        ).result()
    finally:  # the memory table also for a run that failed half-way
        publish_memory_checkpoints(checkpoints, sample=config.input_fasta.name)
    publish_prediction_summary(result)
    if result.demo_models:
        get_run_logger().warning(DEMO_WARNING)
    return result


@flow(
    name="virnucpro-predict",
    task_runner=GpuTaskRunner(),
    description="VirNucPro viral sequence prediction of one FASTA/FASTA.gz (DNABERT-S + ESM-2 features).",
    validate_parameters=True,
)
def predict_flow(
    input_fasta: Path,
    output_dir: Path | None = None,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    persistent_models: bool = _DEFAULTS["persistent_models"],
    dnabert_model: Path | None = None,
    esm_model: Path | None = None,
    classifier: Path | None = None,
    device: DeviceName = "auto",
    precision: PrecisionName = "auto",
    gpus: list[int] | None = None,
    toks_per_batch: int | None = None,
    shard_frames: int = _DEFAULTS["shard_frames"],
    resume: bool = _DEFAULTS["resume"],
) -> PredictionResult:
    """Predict viral sequences in ``input_fasta``.

    Args:
        input_fasta: FASTA or FASTA.gz of contigs or reads.
        output_dir: where the outputs go [default: <input name>_virnucpro next to the input].
        chunk_length: chunk size in bp, 300 or 500 (the classifier must match).
        persistent_models: keep DNABERT-S and ESM-2 loaded in each GPU worker across both stages.
        dnabert_model: DNABERT-S directory [default: discovered, see README].
        esm_model: ESM-2 fair-esm checkpoint file [default: discovered].
        classifier: 300_model.pth / 500_model.pth or the project's .safetensors [default: discovered].
        device: auto, cpu or cuda.
        precision: auto (fp32, the original's numbers), fp32, bf16 or fp16.
        gpus: GPU indices to use [default: every visible GPU].
        toks_per_batch: padded tokens per batch [default: sized from free GPU memory].
        shard_frames: frames per work unit (and per resumable file).
        resume: reuse finished work of an interrupted run in the same output directory.
    """
    config = build_config(
        input_fasta, output_dir, chunk_length, persistent_models, dnabert_model, esm_model,
        classifier, device, precision, gpus, toks_per_batch, shard_frames, resume,
    )
    return run_stages(config)


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


def _models_or_demo(params: dict) -> dict:
    """``params`` unchanged when the models are found; else demo models, with a loud warning."""
    from virnucpro.errors import ModelNotFoundError
    from virnucpro.pipeline.prediction import resolve_run_models

    try:
        resolve_run_models(build_config(**params))
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


def _parse_gpus(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a comma-separated list of GPU indices, e.g. 0,1"
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python flows/predict.py",
        description="Run the virnucpro-predict Prefect flow on one FASTA/FASTA.gz in ephemeral "
        "mode (no server needed). Each option is the flow parameter of the same name.",
    )
    p.add_argument("input_fasta", metavar="INPUT_FASTA", type=Path,
                   help="input_fasta: FASTA or FASTA.gz of contigs or reads")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="output_dir [default: <input name>_virnucpro next to the input]")
    p.add_argument("--chunk-length", type=int, choices=CHUNK_LENGTHS, default=DEFAULT_CHUNK_LENGTH,
                   help="chunk_length in bp; the classifier must match (default: %(default)s)")
    p.add_argument("--persistent-models", action=argparse.BooleanOptionalAction,
                   default=_DEFAULTS["persistent_models"],
                   help="persistent_models: keep both models loaded in each worker across stages")
    p.add_argument("--dnabert-model", type=Path, default=None, help="dnabert_model: DNABERT-S directory")
    p.add_argument("--esm-model", type=Path, default=None, help="esm_model: ESM-2 fair-esm checkpoint")
    p.add_argument("--classifier", type=Path, default=None,
                   help="classifier: 300_model.pth/500_model.pth or .safetensors")
    p.add_argument("--device", choices=[d.value for d in DeviceKind], default="auto",
                   help="device (default: %(default)s)")
    p.add_argument("--precision", choices=["auto"] + [x.value for x in Precision], default="auto",
                   help="precision of the encoders; auto = fp32 (default: %(default)s)")
    p.add_argument("--gpus", type=_parse_gpus, default=None,
                   help="gpus: comma-separated GPU indices [default: all visible]")
    p.add_argument("--toks-per-batch", type=int, default=None,
                   help="toks_per_batch [default: sized from free GPU memory]")
    p.add_argument("--shard-frames", type=int, default=_DEFAULTS["shard_frames"],
                   help="shard_frames: frames per work unit (default: %(default)s)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=_DEFAULTS["resume"],
                   help="resume: reuse finished work in the output directory")
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
        with sigterm_stops():  # SIGTERM stops the run like Ctrl-C
            if demo_if_missing:
                args = _models_or_demo(args)
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
    paths = result.paths
    for path in (paths.prediction_results, paths.highest_score, paths.sequences, paths.run_info,
                 paths.report):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
