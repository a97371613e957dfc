"""Flow ``virnucpro-nightly``: every new sample of an inbox folder through ``virnucpro-predict``.

A sample is new when no output directory of the outbox has a DONE marker holding its SHA-256
(content, not name: a renamed copy of a finished sample is not run again). Each new sample gets
``<outbox>/<stem>-<sha256[:12]>``; a night that crashed is simply run again: finished samples are
skipped and a half-done one resumes from the shards already on disk.

- In-process (default, e.g. ``python flows/nightly.py INBOX OUTBOX`` on a GPU host): the samples
  run one after the other as ``virnucpro-predict`` subflows (largest first). With
  ``persistent_models`` ONE worker pool serves the whole night: each GPU worker loads DNABERT-S and
  ESM-2 once, not once per sample.
- ``dispatch_deployments`` (the ``nightly`` deployment, on the CPU pool ``virnucpro-control``):
  the night takes no GPU slot itself; it spreads the samples over the live GPU slots of the
  ``virnucpro-gpu`` pool, largest first, and sends each slot ONE ``virnucpro-batch/batch`` run
  with its share (one persistent pool per slot), watches them, re-dispatches the samples of lost
  runs, and gives up on a deadline derived from the night's size
  (:mod:`virnucpro.orchestration.dispatch`). The outbox must be on a file system all hosts see.

A sample that fails (e.g. an ``InputError`` for a corrupt file) is recorded with its error and the
night goes on. The night's summary is the ``nightly-summary`` artifact and
``<outbox>/nightly-<date>-<run>.json`` (one per night run), with the night report
``nightly-<date>-<run>.html`` beside it (a row per sample with a link to its report.html, and the
drift against earlier nights). **The flow run ends Failed when any
sample failed or is missing** (after all others ran), naming them, so that it is noticed (Prefect
automations, see ``deployments/automations.yaml``) instead of hiding in a Completed run.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]
if str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

# flows.predict sets the offline Prefect defaults before prefect is imported: import it first.
from flows.predict import predict_flow  # noqa: E402

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from virnucpro.errors import ConfigError  # noqa: E402
from virnucpro.orchestration.artifacts import publish_nightly_summary  # noqa: E402
from virnucpro.orchestration.changed_settings import changed_settings  # noqa: E402
from virnucpro.orchestration.batch import (  # noqa: E402
    DEFAULT_PATTERNS,
    BatchRecord,
    InboxScan,
    NightReport,
    Sample,
    SampleOutcome,
    outcome_from_outputs,
    write_night_report,
)
from virnucpro.orchestration.dispatch import (  # noqa: E402
    BATCH_DEPLOYMENT,
    GPU_POOL,
    DispatchSettings,
    dispatch_night,
)
from virnucpro.orchestration.night_report import write_night_html  # noqa: E402
from virnucpro.orchestration.run_start import start_run  # noqa: E402
from virnucpro.orchestration.samples import BATCH_RUN_PARAMETERS, run_samples  # noqa: E402
from virnucpro.orchestration.task_runner import GpuTaskRunner  # noqa: E402
from virnucpro.orchestration.tasks import find_new_samples  # noqa: E402
from virnucpro.pipeline.parameters import (  # noqa: E402
    RUN_PARAMETERS,
    DeviceName,
    PrecisionName,
    PresetName,
    add_argparse_option,
    parameters_docstring,
    parse_gpus,
)

__all__ = ["nightly_flow", "BATCH_DEPLOYMENT", "NIGHT_RUN_PARAMETERS", "main"]

NIGHT_RUN_PARAMETERS = BATCH_RUN_PARAMETERS
"""The run parameters a night hands to every sample (the rest are the night's own)."""


def _folder(value: Path, name: str) -> Path:
    text = str(value)
    if "{{" in text:
        raise ConfigError(
            f"the {name} parameter is the unresolved template {text!r}: set "
            f"VIRNUCPRO_{name.upper()} before `prefect deploy`, or run with -p {name}=/path"
        )
    return Path(text).expanduser().resolve()


def _skipped(scan: InboxScan, changed: dict[str, tuple[str, ...]]) -> list[SampleOutcome]:
    outcomes = [replace(outcome_from_outputs(s, "already-done", output_dir=out),
                        settings_changed=changed.get(str(s.path), ())) for s, out in scan.finished]
    outcomes += [
        SampleOutcome(str(s.path), s.sha256, "duplicate", str(first.output_dir),
                      error=f"same content as {first.name}")
        for s, first in scan.duplicates
    ]
    return outcomes


def _night_id() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "local"


def _run_name() -> str:
    """``night-<date the run was scheduled for>``."""
    context = FlowRunContext.get()
    when = context.flow_run.expected_start_time if context and context.flow_run else None
    return f"night-{(when.astimezone() if when else dt.datetime.now().astimezone()):%Y-%m-%d}"


@dataclass(frozen=True, slots=True)
class _Ran:
    """What the night's mode did with the pending samples."""

    mode: str
    outcomes: tuple[SampleOutcome, ...]
    model_loads: dict[str, dict[str, int]]
    pools_opened: int
    batches: tuple[BatchRecord, ...] = ()


def _in_process(pending: tuple[Sample, ...], params: dict[str, Any]) -> _Ran:
    mode = "persistent pool" if params["persistent_models"] else "per-stage workers"
    ran = run_samples(predict_flow, pending, params)
    return _Ran(mode, ran.outcomes, ran.model_loads, ran.pools_opened)


def _dispatched(pending: tuple[Sample, ...], params: dict[str, Any], settings: DispatchSettings) -> _Ran:
    result = dispatch_night(pending, params, settings, _night_id(), get_run_logger(),
                            on_cpu=params["device"] == "cpu")
    loads = {f"{b.name} {worker}": counts for b in result.batches for worker, counts in b.model_loads.items()}
    mode = (f"dispatched to {settings.deployment} over {len(result.slots)} GPU slot(s) of "
            f"{settings.gpu_pool}")
    return _Ran(mode, result.outcomes, loads, sum(1 for b in result.batches if b.model_loads), result.batches)


def _with_changed(scan: InboxScan, params: dict[str, Any], rerun: bool,
                  ) -> tuple[InboxScan, dict[str, tuple[str, ...]]]:
    """Which finished samples were made with other settings than tonight's; with ``rerun`` they
    move to the pending samples (their outputs are made again, from every still-valid cache)."""
    changed = {str(s.path): changed_settings(out, s.path, params) for s, out in scan.finished}
    if not rerun:
        return scan, changed
    again = tuple(s for s, _ in scan.finished if changed[str(s.path)])
    kept = tuple(f for f in scan.finished if not changed[str(f[0].path)])
    return replace(scan, pending=scan.pending + again, finished=kept), changed


def _report(scan: InboxScan, ran: _Ran, folders: tuple[Path, Path], started: dt.datetime,
            notes: tuple[str, ...], changed: dict[str, tuple[str, ...]]) -> NightReport:
    outcomes = [*_skipped(scan, changed), *ran.outcomes]
    order = {str(s.path): i for i, s in enumerate(sorted(
        [*scan.pending, *(s for s, _ in scan.finished), *(s for s, _ in scan.duplicates)],
        key=lambda s: s.path))}
    context = FlowRunContext.get()
    return NightReport(
        date=started.strftime("%Y-%m-%d"),
        started=started.isoformat(timespec="seconds"),
        finished=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        inbox=str(folders[0]),
        outbox=str(folders[1]),
        mode=ran.mode,
        samples=tuple(sorted(outcomes, key=lambda o: order.get(o.file, 0))),
        model_loads=ran.model_loads,
        pools_opened=ran.pools_opened,
        flow_run_id=str(context.flow_run.id) if context and context.flow_run else None,
        batches=ran.batches,
        notes=notes,
    )


def _final_state(night: NightReport, path: Path, n_pending: int) -> dict[str, Any] | State:
    if not night.failed:
        return night.to_dict()
    names = "; ".join(f"{Path(s.file).name} ({s.status}): {s.error}" for s in night.failed)
    return Failed(message=f"{len(night.failed)} of {n_pending} new sample(s) not finished "
                  f"(the others finished; see {path}): {names}")


_RUN = {p.name: p.default for p in RUN_PARAMETERS}
_NIGHT_HELP = {
    "inbox": "Folder with the night's FASTA / FASTA.gz files (not searched recursively).",
    "outbox": "Folder for one output directory per sample, nightly-<date>-<run>.json and its .html.",
    "pattern": "File-name globs of samples in the inbox.",
    "persistent_models": "One worker pool for the whole night (per GPU slot when dispatched): each GPU "
                         "worker loads each model once (default on, unlike a single run).",
    "dispatch_deployments": "Spread the samples over the GPU pool's live slots, one `deployment` run "
                            "per slot (several GPUs or hosts); the night itself takes no GPU.",
    "deployment": "The batch deployment to dispatch to.",
    "gpu_pool": "The work pool whose live GPU slots (work queues) get the batch runs.",
    "redispatch_attempts": "How many more times a lost sample (its batch run crashed or its worker "
                           "died) is dispatched before the night gives up on it.",
    "dispatch_timeout_s": "Deadline of a dispatched night in seconds [default: 30 min + the night's "
                          "sequence bytes at 1 kB/s per GPU slot (20 B/s on CPU), with room for "
                          "re-dispatch]; runs still going then are cancelled and the night fails.",
    "rerun_changed": "Run again the finished samples whose outputs were made with other settings "
                     "(models, precision, thresholds, regions, calibration) than tonight's; without it "
                     "they are reported as already-done with the settings that differ.",
    "lost_after_s": "A running batch run without a heartbeat for this long is lost and re-dispatched "
                    "[default: 4 heartbeat intervals of the GPU pool].",
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
    embedding_cache: Path | None = None,
    dispatch_deployments: bool = False,
    deployment: str = BATCH_DEPLOYMENT,
    gpu_pool: str = GPU_POOL,
    redispatch_attempts: int = 2,
    dispatch_timeout_s: float | None = None,
    lost_after_s: float | None = None,
    rerun_changed: bool = False,
) -> dict[str, Any] | State:
    params: dict[str, Any] = {name: value for name, value in locals().items() if name in NIGHT_RUN_PARAMETERS}
    notes = start_run()
    logger = get_run_logger()
    folders = (_folder(inbox, "inbox"), _folder(outbox, "outbox"))
    started = dt.datetime.now().astimezone()
    scan = find_new_samples.submit(folders[0], folders[1], list(pattern)).result()
    scan, changed = _with_changed(scan, params, rerun_changed)
    if any(changed.values()):
        logger.warning("%d finished sample(s) were made with other settings than tonight's%s",
                       sum(1 for c in changed.values() if c),
                       "; running them again" if rerun_changed else " (rerun_changed=true runs them again)")
    folders[1].mkdir(parents=True, exist_ok=True)
    if dispatch_deployments:
        settings = DispatchSettings(deployment=deployment, gpu_pool=gpu_pool,
                                    redispatch_attempts=redispatch_attempts,
                                    timeout_s=dispatch_timeout_s, lost_after_s=lost_after_s)
        ran = _dispatched(scan.pending, params, settings) if scan.pending else _Ran(
            f"dispatched to {deployment}", (), {}, 0)
    else:
        ran = _in_process(scan.pending, params) if scan.pending else _Ran(
            "persistent pool" if persistent_models else "per-stage workers", (), {}, 0)
    night = _report(scan, ran, folders, started, notes, changed)
    path = write_night_report(night)
    page = write_night_html(night)
    publish_nightly_summary(night)
    logger.info("night summary: %s; night report: %s", path, page)
    return _final_state(night, path, len(scan.pending))


_nightly.__doc__ = parameters_docstring(
    "Run every new sample of ``inbox``; outputs and the night's JSON go to ``outbox``.",
    ("inbox", "outbox", "pattern", *NIGHT_RUN_PARAMETERS, "dispatch_deployments", "deployment",
     "gpu_pool", "redispatch_attempts", "dispatch_timeout_s", "lost_after_s", "rerun_changed"),
    extra=_NIGHT_HELP,
)

nightly_flow = flow(
    name="virnucpro-nightly",
    task_runner=GpuTaskRunner(),
    flow_run_name=_run_name,
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
                   help=f"dispatch_deployments: one {BATCH_DEPLOYMENT} run per live GPU slot")
    p.add_argument("--rerun-changed", action="store_true", help=f"rerun_changed: {_NIGHT_HELP['rerun_changed']}")
    args = vars(p.parse_args(argv))
    args["pattern"] = args["pattern"] or list(DEFAULT_PATTERNS)
    gpus = parse_gpus(args["gpus"])
    args["gpus"] = list(gpus) if gpus else None
    state = nightly_flow(**args, return_state=True)
    print(state.message or state.name, file=sys.stderr if state.is_failed() else sys.stdout)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
