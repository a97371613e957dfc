"""Flow ``virnucpro-nightly``: every new sample of an inbox folder through ``virnucpro-predict``.

A sample is new when no output directory of the outbox has a DONE marker holding its SHA-256
(content, not name: a renamed copy of a finished sample is not run again). Each new sample gets
``<outbox>/<stem>-<sha256[:12]>``; a night that crashed is simply run again: finished samples are
skipped and a half-done one resumes from the shards already on disk.

- In-process (default): the samples run one after the other as ``virnucpro-predict`` subflows.
  With ``persistent_models`` ONE worker pool serves the whole night: each GPU worker loads
  DNABERT-S and ESM-2 once, not once per sample.
- ``dispatch_deployments``: each sample becomes its own ``virnucpro-predict/predict`` deployment
  run, so the workers of every GPU host polling the work pool share the night (the outbox must be
  on a file system all hosts see). The flow waits for them to report their outcome.

A sample that fails (e.g. an ``InputError`` for a corrupt file) is recorded with its error and the
night goes on. The night's summary is the ``nightly-summary`` artifact and
``<outbox>/nightly-<date>.json``. **The flow run ends Failed when any sample failed** (after all
others ran), so that a failed sample is noticed (Prefect notifications/automations) instead of
hiding in a Completed run; fix or remove the sample and run the night again.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]
if str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

# flows.predict sets the offline Prefect defaults before prefect is imported: import it first.
from flows.predict import DeviceName, PrecisionName, build_config, predict_flow  # noqa: E402

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from virnucpro.config import DEFAULT_CHUNK_LENGTH  # noqa: E402
from virnucpro.errors import ConfigError  # noqa: E402
from virnucpro.orchestration.artifacts import publish_nightly_summary  # noqa: E402
from virnucpro.orchestration.batch import (  # noqa: E402
    DEFAULT_PATTERNS,
    InboxScan,
    NightReport,
    Sample,
    SampleOutcome,
    outcome_from_outputs,
    write_night_report,
)
from virnucpro.orchestration.task_runner import GpuTaskRunner, current_gpu_runner  # noqa: E402
from virnucpro.orchestration.tasks import find_new_samples, resolve_plan  # noqa: E402
from virnucpro.pipeline.persistent_pool import PersistentWorkerPool  # noqa: E402

__all__ = ["nightly_flow", "PREDICT_DEPLOYMENT", "main"]

PREDICT_DEPLOYMENT = "virnucpro-predict/predict"


def _folder(value: Path, name: str) -> Path:
    text = str(value)
    if "{{" in text:
        raise ConfigError(
            f"the {name} parameter is the unresolved template {text!r}: set "
            f"VIRNUCPRO_{name.upper()} before `prefect deploy`, or run with -p {name}=/path"
        )
    return Path(text).expanduser().resolve()


def _error_text(state: State) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as read_error:  # the result itself may be unreadable
        exc = read_error
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "failed"


def _run_in_process(
    pending: tuple[Sample, ...], params: dict[str, Any]
) -> tuple[list[SampleOutcome], PersistentWorkerPool | None, int]:
    """Each sample as a predict subflow; one shared pool when ``persistent_models``."""
    logger = get_run_logger()
    runner = current_gpu_runner()
    persistent = bool(params["persistent_models"])
    plan = None
    pool: PersistentWorkerPool | None = None
    own_pool: PersistentWorkerPool | None = None  # only without our runner
    pools_opened = 0
    outcomes: list[SampleOutcome] = []
    try:
        for sample in pending:
            task_runner = GpuTaskRunner()
            if persistent:
                if plan is None:  # resolves the models once: a missing model fails the night here
                    config = build_config(sample.path, sample.output_dir, **params)
                    plan = resolve_plan.submit(config).result()
                if pool is None or not pool.is_running:
                    if pool is not None:
                        logger.warning("the night's worker pool broke; opening a new one")
                    if runner is not None:
                        before = runner.pools_opened
                        pool = runner.pool_for(plan)  # closed when the night ends
                        pools_opened += runner.pools_opened - before
                    else:
                        from virnucpro.pipeline.prediction import open_pool

                        if own_pool is not None:
                            own_pool.close()
                        pool = own_pool = open_pool(plan)
                        pools_opened += 1
                task_runner = GpuTaskRunner(pool=pool)
            logger.info("sample %s (%s) -> %s", sample.name, sample.sha256[:12], sample.output_dir)
            subflow = predict_flow.with_options(flow_run_name=f"{sample.name}", task_runner=task_runner)
            state = subflow(input_fasta=sample.path, output_dir=sample.output_dir, **params,
                            return_state=True)
            run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
            if state.is_completed():
                outcomes.append(outcome_from_outputs(sample, "done", flow_run_id=run_id))
            else:
                error = _error_text(state)
                logger.error("sample %s failed: %s", sample.name, error)
                outcomes.append(outcome_from_outputs(sample, "failed", flow_run_id=run_id, error=error))
    finally:
        if own_pool is not None:
            own_pool.close()
    return outcomes, pool, pools_opened


def _dispatch(
    pending: tuple[Sample, ...], params: dict[str, Any], deployment: str, timeout_s: float
) -> list[SampleOutcome]:
    """Each sample as its own deployment run; wait until all of them end (or ``timeout_s``)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    context = FlowRunContext.get()
    night_id = str(context.flow_run.id) if context and context.flow_run else "local"
    json_params = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    runs: list[tuple[Sample, FlowRun]] = []
    for sample in pending:
        run = run_deployment(
            name=deployment,
            parameters={"input_fasta": str(sample.path), "output_dir": str(sample.output_dir), **json_params},
            flow_run_name=sample.name,
            timeout=0,
            idempotency_key=f"{night_id}:{sample.sha256}",  # a retried night does not submit twice
        )
        logger.info("dispatched %s as flow run %s of %s", sample.name, run.id, deployment)
        runs.append((sample, run))
    deadline = time.monotonic() + timeout_s
    final: dict[str, FlowRun] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(runs) and time.monotonic() < deadline:
            for _, run in runs:
                if str(run.id) not in final:
                    current = client.read_flow_run(run.id)
                    if current.state is not None and current.state.is_final():
                        final[str(run.id)] = current
            if len(final) < len(runs):
                time.sleep(5)
    outcomes = []
    for sample, run in runs:
        current = final.get(str(run.id))
        if current is None:
            outcomes.append(outcome_from_outputs(sample, "running", flow_run_id=str(run.id),
                                                 error=f"still running after {timeout_s:.0f} s"))
        elif current.state is not None and current.state.is_completed():
            outcomes.append(outcome_from_outputs(sample, "done", flow_run_id=str(run.id)))
        else:
            message = current.state.message if current.state else "no state"
            outcomes.append(outcome_from_outputs(
                sample, "failed", flow_run_id=str(run.id),
                error=f"{current.state.name if current.state else 'Unknown'}: {message}",
            ))
    return outcomes


def _skipped(scan: InboxScan) -> list[SampleOutcome]:
    outcomes = [outcome_from_outputs(s, "already-done", output_dir=out) for s, out in scan.finished]
    outcomes += [
        SampleOutcome(str(s.path), s.sha256, "duplicate", str(first.output_dir),
                      error=f"same content as {first.name}")
        for s, first in scan.duplicates
    ]
    return outcomes


@flow(
    name="virnucpro-nightly",
    task_runner=GpuTaskRunner(),
    description="VirNucPro nightly batch: every new sample of an inbox folder through virnucpro-predict.",
    validate_parameters=True,
)
def nightly_flow(
    inbox: Path,
    outbox: Path,
    pattern: list[str] = list(DEFAULT_PATTERNS),  # noqa: B006 (pydantic copies it)
    persistent_models: bool = True,
    chunk_length: int = DEFAULT_CHUNK_LENGTH,
    dnabert_model: Path | None = None,
    esm_model: Path | None = None,
    classifier: Path | None = None,
    device: DeviceName = "auto",
    precision: PrecisionName = "auto",
    gpus: list[int] | None = None,
    toks_per_batch: int | None = None,
    dispatch_deployments: bool = False,
    deployment: str = PREDICT_DEPLOYMENT,
    dispatch_timeout_s: float = 12 * 3600.0,
) -> dict[str, Any] | State:
    """Run every new sample of ``inbox``; outputs and the night's JSON go to ``outbox``.

    Args:
        inbox: folder with the night's FASTA / FASTA.gz files (not searched recursively).
        outbox: folder for one output directory per sample and ``nightly-<date>.json``.
        pattern: file-name globs of samples in the inbox.
        persistent_models: one worker pool for the whole night, models loaded once per GPU.
        chunk_length: as for virnucpro-predict (the same for every sample).
        dnabert_model: as for virnucpro-predict.
        esm_model: as for virnucpro-predict.
        classifier: as for virnucpro-predict.
        device: as for virnucpro-predict.
        precision: as for virnucpro-predict.
        gpus: as for virnucpro-predict.
        toks_per_batch: as for virnucpro-predict.
        dispatch_deployments: run each sample as its own ``deployment`` run (several GPU hosts).
        deployment: the predict deployment to dispatch to.
        dispatch_timeout_s: how long to wait for dispatched runs before reporting them running.
    """
    logger = get_run_logger()
    inbox_dir, outbox_dir = _folder(inbox, "inbox"), _folder(outbox, "outbox")
    started = dt.datetime.now().astimezone()
    context = FlowRunContext.get()
    scan = find_new_samples.submit(inbox_dir, outbox_dir, list(pattern)).result()
    outbox_dir.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = dict(
        chunk_length=chunk_length, persistent_models=persistent_models,
        dnabert_model=dnabert_model, esm_model=esm_model, classifier=classifier,
        device=device, precision=precision, gpus=gpus, toks_per_batch=toks_per_batch,
    )
    outcomes = _skipped(scan)
    model_loads: dict[str, dict[str, int]] = {}
    pools_opened = 0
    if dispatch_deployments:
        mode = f"dispatched to {deployment}"
        if scan.pending:
            outcomes += _dispatch(scan.pending, params, deployment, dispatch_timeout_s)
    else:
        mode = "persistent pool" if persistent_models else "per-stage workers"
        if scan.pending:
            ran, pool, pools_opened = _run_in_process(scan.pending, params)
            outcomes += ran
            if pool is not None:
                model_loads = {w.name: dict(w.total_model_loads) for w in pool.workers}
    order = {str(s.path): i for i, s in enumerate(sorted(
        [*scan.pending, *(s for s, _ in scan.finished), *(s for s, _ in scan.duplicates)],
        key=lambda s: s.path))}
    night = NightReport(
        date=started.strftime("%Y-%m-%d"),
        started=started.isoformat(timespec="seconds"),
        finished=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        inbox=str(inbox_dir),
        outbox=str(outbox_dir),
        mode=mode,
        samples=tuple(sorted(outcomes, key=lambda o: order.get(o.file, 0))),
        model_loads=model_loads,
        pools_opened=pools_opened,
        flow_run_id=str(context.flow_run.id) if context and context.flow_run else None,
    )
    path = write_night_report(night)
    publish_nightly_summary(night)
    logger.info("night summary: %s", path)
    if night.failed:
        names = "; ".join(f"{Path(s.file).name}: {s.error}" for s in night.failed)
        return Failed(message=f"{len(night.failed)} of {len(scan.pending)} new sample(s) failed "
                      f"(the others finished; see {path}): {names}")
    return night.to_dict()


# -- python flows/nightly.py ------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python flows/nightly.py INBOX OUTBOX [options]``: one night in ephemeral mode."""
    p = argparse.ArgumentParser(prog="python flows/nightly.py",
                                description="Run the virnucpro-nightly flow once (ephemeral mode).")
    p.add_argument("inbox", type=Path, metavar="INBOX", help="inbox: folder of new samples")
    p.add_argument("outbox", type=Path, metavar="OUTBOX", help="outbox: folder for the outputs")
    p.add_argument("--pattern", action="append", default=None,
                   help=f"pattern: sample file glob, repeatable (default: {' '.join(DEFAULT_PATTERNS)})")
    p.add_argument("--persistent-models", action=argparse.BooleanOptionalAction, default=True,
                   help="persistent_models: one pool for the night (default: on)")
    p.add_argument("--chunk-length", type=int, default=DEFAULT_CHUNK_LENGTH, help="chunk_length")
    p.add_argument("--dnabert-model", type=Path, default=None, help="dnabert_model")
    p.add_argument("--esm-model", type=Path, default=None, help="esm_model")
    p.add_argument("--classifier", type=Path, default=None, help="classifier")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help="precision")
    p.add_argument("--dispatch-deployments", action="store_true",
                   help=f"dispatch_deployments: one {PREDICT_DEPLOYMENT} run per sample")
    args = vars(p.parse_args(argv))
    args["pattern"] = args["pattern"] or list(DEFAULT_PATTERNS)
    state = nightly_flow(**args, return_state=True)
    print(state.message or state.name, file=sys.stderr if state.is_failed() else sys.stdout)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
