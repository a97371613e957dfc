"""Flow ``virnucpro-batch``: several samples through ``virnucpro-predict`` on ONE worker pool.

A dispatched night (``flows/nightly.py`` with ``dispatch_deployments``) sends one batch run to
each GPU slot of the ``virnucpro-gpu`` pool with that slot's share of the night's samples. The
batch runs them one after another, largest first, as ``virnucpro-predict`` subflows that all use
the batch's persistent pool: each GPU worker loads DNABERT-S and ESM-2 once per batch, not once per
sample. Run one by hand::

    prefect deployment run 'virnucpro-batch/batch' \\
        -p samples='[{"input_fasta": "/data/s1.fa"}, {"input_fasta": "/data/s2.fa.gz"}]'

Without ``output_dir`` a sample writes ``<its folder>/<stem>-<sha256[:12]>`` (the night's naming).
A sample that fails is recorded and the others run; the batch then ends Failed naming it. The run
publishes ``batch-summary-<work queue>`` (samples, calls, model loads of the pool).
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]
if str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

# flows.predict sets the offline Prefect defaults before prefect is imported: import it first.
from flows.predict import predict_flow  # noqa: E402

from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from virnucpro.orchestration.artifacts import artifact_key, batch_markdown  # noqa: E402
from virnucpro.orchestration.run_start import start_run  # noqa: E402
from virnucpro.orchestration.samples import (  # noqa: E402
    BATCH_RUN_PARAMETERS,
    BatchSample,
    run_samples,
    to_samples,
)
from virnucpro.orchestration.task_runner import GpuTaskRunner  # noqa: E402
from virnucpro.pipeline.parameters import (  # noqa: E402
    RUN_PARAMETERS,
    DeviceName,
    PrecisionName,
    PresetName,
    parameters_docstring,
)

__all__ = ["batch_flow", "BATCH_SUMMARY_KEY"]

BATCH_SUMMARY_KEY = "batch-summary"
_RUN = {p.name: p.default for p in RUN_PARAMETERS}


def _queue() -> str | None:
    context = FlowRunContext.get()
    return context.flow_run.work_queue_name if context is not None and context.flow_run else None


def _run_name() -> str:
    """``batch-<work queue>-<largest sample>+<n more>``."""
    context = FlowRunContext.get()
    samples = list(((context.parameters if context is not None else None) or {}).get("samples") or [])
    first = samples[0] if samples else None
    path = first.input_fasta if isinstance(first, BatchSample) else (first or {}).get("input_fasta", "none")
    more = f"+{len(samples) - 1}" if len(samples) > 1 else ""
    return f"batch-{_queue() or 'local'}-{Path(str(path)).name}{more}"


def _batch(
    samples: list[BatchSample],
    persistent_models: bool = True,
    chunk_length: int = _RUN["chunk_length"],
    dnabert_model: Path | None = None,
    esm_model: Path | None = None,
    classifier: Path | None = None,
    device: DeviceName = _RUN["device"],
    precision: PrecisionName = _RUN["precision"],
    gpus: list[int] | None = None,
    toks_per_batch: int | None = None,
    preset: PresetName = _RUN["preset"],
    min_score: float | None = None,
    min_virus_fraction: float | None = None,
    smooth_window: int = _RUN["smooth_window"],
    max_gap: int = _RUN["max_gap"],
    min_region_length: int = _RUN["min_region_length"],
    calibration: Path | None = None,
    embedding_cache: Path | None = None,
) -> dict[str, Any] | State:
    params = {name: value for name, value in locals().items() if name in BATCH_RUN_PARAMETERS}
    notes = start_run()
    batch = run_samples(predict_flow, to_samples(samples), params)
    queue = _queue()
    create_markdown_artifact(
        markdown=batch_markdown(batch.outcomes, batch.model_loads, queue, notes),
        key=artifact_key(BATCH_SUMMARY_KEY, queue or "local"),
        description=f"VirNucPro batch on {queue or 'a local run'}: {len(batch.outcomes)} sample(s)",
    )
    failed = [o for o in batch.outcomes if o.status != "done"]
    result = {"samples": [o.file for o in batch.outcomes], "model_loads": batch.model_loads,
              "pools_opened": batch.pools_opened}
    if failed:
        names = "; ".join(f"{Path(o.file).name}: {o.error}" for o in failed)
        return Failed(message=f"{len(failed)} of {len(batch.outcomes)} sample(s) failed: {names}")
    get_run_logger().info("batch done: %d sample(s), model loads %s", len(batch.outcomes), batch.model_loads)
    return result


_batch.__doc__ = parameters_docstring(
    "Run ``samples`` (largest first) through virnucpro-predict on one worker pool.",
    ("samples", *BATCH_RUN_PARAMETERS),
    extra={
        "samples": "The samples: a list of {input_fasta, output_dir (optional), sha256 (optional)}.",
        "persistent_models": "One worker pool for the whole batch: each GPU worker loads each model "
                             "once (default on: a batch has several samples).",
    },
)

batch_flow = flow(
    name="virnucpro-batch",
    task_runner=GpuTaskRunner(),
    flow_run_name=_run_name,
    description="VirNucPro batch: several samples through virnucpro-predict on one persistent GPU pool.",
    validate_parameters=True,
)(_batch)
