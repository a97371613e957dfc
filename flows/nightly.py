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
``<outbox>/nightly-<date>.json``, with the night report ``nightly-<date>.html`` beside it (a row per
sample with a link to its report.html, and the drift against earlier nights). **The flow run ends Failed when any sample failed** (after all
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
from flows.predict import announce_temporary_server, predict_flow  # noqa: E402

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

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
from virnucpro.orchestration.night_report import write_night_html  # noqa: E402
from virnucpro.orchestration.task_runner import GpuTaskRunner, current_gpu_runner  # noqa: E402
from virnucpro.orchestration.tasks import STEP_TASKS, find_new_samples  # noqa: E402
from virnucpro.pipeline.lease import PoolLease  # noqa: E402
from virnucpro.pipeline.parameters import (  # noqa: E402
    RUN_PARAMETERS,
    DeviceName,
    PrecisionName,
    PresetName,
    add_argparse_option,
    build_config,
    parameters_docstring,
    parse_gpus,
)
from virnucpro.pipeline.steps import PLAN  # noqa: E402

__all__ = ["nightly_flow", "PREDICT_DEPLOYMENT", "NIGHT_RUN_PARAMETERS", "main"]

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
) -> tuple[list[SampleOutcome], PoolLease]:
    """Each sample as a predict subflow; with ``persistent_models`` the night's lease is lent to
    every sample, so each worker loads each model once per night."""
    logger = get_run_logger()
    runner = current_gpu_runner()
    night = runner.lease if runner is not None else PoolLease.for_run(bool(params["persistent_models"]))
    first = pending[0]
    # resolves the models once: a missing model fails the night here, not once per sample
    STEP_TASKS[PLAN.name].submit(build_config({"input_fasta": first.path, **params}), night.persistent).result()
    outcomes: list[SampleOutcome] = []
    try:
        for sample in pending:
            task_runner = GpuTaskRunner(lender=night) if night.persistent else GpuTaskRunner(persistent_models=False)
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
        if runner is None:
            night.close()
    return outcomes, night


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


_RUN = {p.name: p.default for p in RUN_PARAMETERS}
NIGHT_RUN_PARAMETERS = ("persistent_models", "chunk_length", "dnabert_model", "esm_model", "classifier",
                        "device", "precision", "gpus", "toks_per_batch", "preset", "min_score",
                        "min_virus_fraction", "smooth_window", "max_gap", "min_region_length",
                        "calibration")
"""The run parameters a night hands to every sample (the rest are the night's own): every sample
of a night is called with the same thresholds, region rule and calibration."""
_NIGHT_HELP = {
    "inbox": "Folder with the night's FASTA / FASTA.gz files (not searched recursively).",
    "outbox": "Folder for one output directory per sample, nightly-<date>.json and nightly-<date>.html.",
    "pattern": "File-name globs of samples in the inbox.",
    "persistent_models": "One worker pool for the whole night: each GPU worker loads each model once "
                         "(default on, unlike a single run: a night has many samples).",
    "dispatch_deployments": "Run each sample as its own `deployment` run (several GPU hosts).",
    "deployment": "The predict deployment to dispatch to.",
    "dispatch_timeout_s": "How long to wait for dispatched runs before reporting them running.",
}


def _nightly(
    inbox: Path,
    outbox: Path,
    pattern: list[str] = list(DEFAULT_PATTERNS),  # noqa: B006 (pydantic copies it)
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
    dispatch_deployments: bool = False,
    deployment: str = PREDICT_DEPLOYMENT,
    dispatch_timeout_s: float = 12 * 3600.0,
) -> dict[str, Any] | State:
    params: dict[str, Any] = {name: value for name, value in locals().items() if name in NIGHT_RUN_PARAMETERS}
    logger = get_run_logger()
    inbox_dir, outbox_dir = _folder(inbox, "inbox"), _folder(outbox, "outbox")
    started = dt.datetime.now().astimezone()
    context = FlowRunContext.get()
    scan = find_new_samples.submit(inbox_dir, outbox_dir, list(pattern)).result()
    outbox_dir.mkdir(parents=True, exist_ok=True)
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
            ran, night_lease = _run_in_process(scan.pending, params)
            outcomes += ran
            if night_lease.persistent:
                model_loads = night_lease.model_loads()
                pools_opened = night_lease.pools_opened
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
    page = write_night_html(night)
    publish_nightly_summary(night)
    logger.info("night summary: %s; night report: %s", path, page)
    if night.failed:
        names = "; ".join(f"{Path(s.file).name}: {s.error}" for s in night.failed)
        return Failed(message=f"{len(night.failed)} of {len(scan.pending)} new sample(s) failed "
                      f"(the others finished; see {path}): {names}")
    return night.to_dict()


_nightly.__doc__ = parameters_docstring(
    "Run every new sample of ``inbox``; outputs and the night's JSON go to ``outbox``.",
    ("inbox", "outbox", "pattern", *NIGHT_RUN_PARAMETERS, "dispatch_deployments", "deployment",
     "dispatch_timeout_s"),
    extra=_NIGHT_HELP,
)

nightly_flow = flow(
    name="virnucpro-nightly",
    task_runner=GpuTaskRunner(),
    description="VirNucPro nightly batch: every new sample of an inbox folder through virnucpro-predict.",
    validate_parameters=True,
)(_nightly)


# -- python flows/nightly.py ------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python flows/nightly.py INBOX OUTBOX [options]``: one night in ephemeral mode."""
    p = argparse.ArgumentParser(prog="python flows/nightly.py",
                                description="Run the virnucpro-nightly flow once (ephemeral mode).")
    p.add_argument("inbox", type=Path, metavar="INBOX", help="inbox: folder of new samples")
    p.add_argument("outbox", type=Path, metavar="OUTBOX", help="outbox: folder for the outputs")
    p.add_argument("--pattern", action="append", default=None,
                   help=f"pattern: sample file glob, repeatable (default: {' '.join(DEFAULT_PATTERNS)})")
    for name in NIGHT_RUN_PARAMETERS:
        add_argparse_option(p, name, default=True if name == "persistent_models" else None)
    p.add_argument("--dispatch-deployments", action="store_true",
                   help=f"dispatch_deployments: one {PREDICT_DEPLOYMENT} run per sample")
    args = vars(p.parse_args(argv))
    args["pattern"] = args["pattern"] or list(DEFAULT_PATTERNS)
    gpus = parse_gpus(args["gpus"])
    args["gpus"] = list(gpus) if gpus else None
    announce_temporary_server()
    state = nightly_flow(**args, return_state=True)
    print(state.message or state.name, file=sys.stderr if state.is_failed() else sys.stdout)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
