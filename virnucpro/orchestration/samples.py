"""The sample loop shared by the in-process night and the batch flow: samples through one lease.

:func:`run_samples` runs each sample as a ``virnucpro-predict`` subflow of the current flow run,
largest first, all on the lease of the current flow's :class:`GpuTaskRunner` (lent to each
sample): with ``persistent_models`` ONE worker pool serves every sample, so each GPU worker loads
DNABERT-S and ESM-2 once per batch, not once per sample. The models are resolved once before the
first sample (a missing model fails the whole batch at once, not once per sample); a sample that
fails is recorded with its error and the loop goes on.

The predict flow is passed in (it lives in ``flows/``, above this layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Flow, get_run_logger
from prefect.states import State
from pydantic import BaseModel

from virnucpro.domain.checksums import sha256_file
from virnucpro.orchestration.batch import Sample, SampleOutcome, outcome_from_outputs, sample_output_dir
from virnucpro.orchestration.partition import input_size
from virnucpro.orchestration.task_runner import GpuTaskRunner, current_gpu_runner
from virnucpro.orchestration.tasks import STEP_TASKS
from virnucpro.pipeline.lease import PoolLease
from virnucpro.pipeline.parameters import build_config
from virnucpro.pipeline.steps import CHECK_MODELS, PLAN

__all__ = ["BATCH_RUN_PARAMETERS", "BatchSample", "SampleRun", "run_samples", "error_text", "to_samples",
           "json_parameters"]

BATCH_RUN_PARAMETERS = ("persistent_models", "chunk_length", "dnabert_model", "esm_model", "classifier",
                        "device", "precision", "gpus", "toks_per_batch", "preset", "min_score",
                        "min_virus_fraction", "smooth_window", "max_gap", "min_region_length",
                        "calibration", "embedding_cache")
"""The run parameters a batch (or a night) hands to every sample; input and output are each
sample's, shard size and resume keep the table's defaults. Every sample of a batch (a night) is
called with the same thresholds, region rule and calibration."""


class BatchSample(BaseModel):
    """One sample of a batch run, as a deployment parameter (JSON)."""

    input_fasta: Path
    output_dir: Path | None = None
    sha256: str | None = None  # the night's hash of the file; hashed again when absent


def to_samples(items: Sequence[BatchSample | Mapping[str, Any]], outbox: Path | None = None) -> list[Sample]:
    """Batch parameters as :class:`Sample` records (hashing files whose hash was not given;
    without an output dir a sample writes ``<outbox or its folder>/<stem>-<sha256[:12]>``)."""
    samples = []
    for item in items:
        spec = item if isinstance(item, BatchSample) else BatchSample.model_validate(dict(item))
        path = spec.input_fasta.expanduser()
        digest = spec.sha256 or sha256_file(path)
        out = spec.output_dir or sample_output_dir(outbox or path.parent, path, digest)
        samples.append(Sample(path, digest, Path(out)))
    return samples


def json_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Run parameters as JSON values (paths as strings) for a deployment run."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}


def error_text(state: State) -> str:
    """``ExceptionType: message`` of a failed run's state (its message when the result is gone)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as read_error:  # the result itself may be unreadable
        exc = read_error
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "failed"


@dataclass(frozen=True, slots=True)
class SampleRun:
    """What :func:`run_samples` did: each sample's outcome and the lease that served them."""

    outcomes: tuple[SampleOutcome, ...]
    lease: PoolLease

    @property
    def model_loads(self) -> dict[str, dict[str, int]]:
        return self.lease.model_loads() if self.lease.persistent else {}

    @property
    def pools_opened(self) -> int:
        return self.lease.pools_opened if self.lease.persistent else 0


def run_samples(predict: Flow, samples: Sequence[Sample], params: Mapping[str, Any]) -> SampleRun:
    """Each sample (largest first) as a ``predict`` subflow on the current flow's lease."""
    logger = get_run_logger()
    runner = current_gpu_runner()
    lease = runner.lease if runner is not None else PoolLease.for_run(bool(params["persistent_models"]))
    ordered = sorted(samples, key=lambda s: -input_size(s.path))
    outcomes: list[SampleOutcome] = []
    if not ordered:
        return SampleRun((), lease)
    first = ordered[0]
    # resolves and checks the models once: a missing or mismatched model fails the batch here,
    # not once per sample
    plan = STEP_TASKS[PLAN.name].submit(build_config({"input_fasta": first.path, **params}),
                                        lease.persistent).result()
    STEP_TASKS[CHECK_MODELS.name].submit(plan).result()
    try:
        for sample in ordered:
            task_runner = GpuTaskRunner(lender=lease) if lease.persistent else GpuTaskRunner(persistent_models=False)
            logger.info("sample %s (%s) -> %s", sample.name, sample.sha256[:12], sample.output_dir)
            state = predict.with_options(task_runner=task_runner)(
                input_fasta=sample.path, output_dir=sample.output_dir, **params, return_state=True,
            )
            run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
            if state.is_completed():
                outcomes.append(outcome_from_outputs(sample, "done", flow_run_id=run_id))
            else:
                error = error_text(state)
                logger.error("sample %s failed: %s", sample.name, error)
                outcomes.append(outcome_from_outputs(sample, "failed", flow_run_id=run_id, error=error))
    finally:
        if runner is None:
            lease.close()
    return SampleRun(tuple(outcomes), lease)
