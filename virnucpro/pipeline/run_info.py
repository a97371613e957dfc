"""run_info.json: provenance beside every output, as ONE typed record.

:class:`RunInfo` is built once, at the end of a run (:func:`build_run_info`), written to
``run_info.json`` and handed to whatever shows it (the HTML report, the Prefect artifacts), which
read its fields instead of indexing a JSON dict. :meth:`RunInfo.read` reads a file back into the
same record.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from virnucpro import __version__
from virnucpro.config import Precision, RunConfig
from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.outputs import OutputPaths
from virnucpro.pipeline.calling import CallSettings
from virnucpro.pipeline.memory import MemoryCheckpoint
from virnucpro.pipeline.plan import RunPlan
from virnucpro.pipeline.stages import ClassifyReport, PreparedSample, ReportResult
from virnucpro.pipeline.work_queue import StageReport

__all__ = [
    "RUN_INFO_VERSION",
    "DEMO_WARNING",
    "InputInfo",
    "ModelInfo",
    "StageInfo",
    "ThresholdsInfo",
    "RegionsInfo",
    "CalibrationInfo",
    "RunInfo",
    "config_dict",
    "build_run_info",
]

RUN_INFO_VERSION = 2  # 2: thresholds, regions, calibration; the hand-off outputs
DEMO_WARNING = "DEMO MODELS WITH RANDOM WEIGHTS: every call in these outputs is meaningless"


@dataclass(frozen=True, slots=True)
class InputInfo:
    path: str
    sha256: str
    records: int
    chunks: int
    frames: int
    shards: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model file: where it is, how it was found, its SHA-256."""

    path: str
    file: str
    sha256: str
    source: str
    found_via: str
    size: int
    hash_seconds: float
    tokenizer: str | None = None
    tokenizer_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("tokenizer", "tokenizer_sha256"):
            if data[key] is None:
                del data[key]
        return data


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One feature stage's counts, rates, memory and recoveries."""

    stage: str
    persistent: bool
    shards_total: int
    shards_skipped: int
    frames: int
    tokens: int
    padded_tokens: int
    seconds: float
    worker_peak_mib: dict[str, float]
    model_loads: dict[str, dict[str, int]]
    worker_restarts: int
    oom_retries: int
    pool_start_seconds: float
    frames_per_s: float
    tokens_per_s: float
    resumed: bool = False
    fp32_recomputed: int = 0
    embed_seconds: float = 0.0  # of ``seconds``: from the first shard handed to a ready worker
    worker_peak_measure: str = ""  # what ``worker_peak_mib`` measures (GPU: torch; CPU: RSS)
    duplicate_frames: int = 0
    cache_hits: int = 0  # frames read from the embedding cache
    cache_added: int = 0  # rows added to the embedding cache
    phase_seconds: dict[str, float] = field(default_factory=dict)  # time outside embedding, by step
    shards_scored: int = 0  # shards the classifier scored beside the stage

    @classmethod
    def of(cls, report: StageReport) -> "StageInfo":
        data = report.to_dict()
        extra = {k: data.pop(k) for k in ("resumed", "fp32_recomputed", "duplicate_frames", "cache_hits",
                                            "cache_added", "phase_seconds", "shards_scored")}
        return cls(**data, frames_per_s=report.frames_per_s, tokens_per_s=report.tokens_per_s, **extra)

    @property
    def label(self) -> str:
        from virnucpro.pipeline.stage import FeatureStage

        return FeatureStage(self.stage).label


@dataclass(frozen=True, slots=True)
class ThresholdsInfo:
    """The call thresholds the run applied (the preset with any explicit option over it)."""

    preset: str
    min_score: float | None  # None: the original rule, max P(virus) >= max P(others)
    min_virus_fraction: float
    chunk_threshold: float  # the chunk score a chunk needs (0.5 for the original rule)
    rule: str  # the rule in words

    @classmethod
    def of(cls, calling: CallSettings) -> "ThresholdsInfo":
        t = calling.thresholds
        return cls(calling.preset.value, t.min_score, t.min_virus_fraction, t.chunk_threshold,
                   t.describe())


@dataclass(frozen=True, slots=True)
class RegionsInfo:
    """The viral-region rule's settings (virnucpro.domain.regions)."""

    smooth_window: int
    smoothing: str
    max_gap: int
    min_length: int

    @classmethod
    def of(cls, calling: CallSettings) -> "RegionsInfo":
        r = calling.regions
        return cls(r.smooth_window, r.smoothing.value, r.max_gap, r.min_length)


@dataclass(frozen=True, slots=True)
class CalibrationInfo:
    """The calibration file applied (``--calibration``) and what it was fitted on."""

    file: str
    sha256: str
    temperature: float
    fitted_on: str
    chunk_length: int | None
    n_sequences: int
    n_virus: int
    n_non_virus: int
    ece_before: float
    ece_after: float

    @classmethod
    def of(cls, calling: CallSettings) -> "CalibrationInfo | None":
        c = calling.calibration
        if c is None or calling.calibration_file is None or calling.calibration_sha256 is None:
            return None
        return cls(str(calling.calibration_file), calling.calibration_sha256, c.temperature,
                   c.fitted_on, c.chunk_length, c.n_sequences, c.n_virus, c.n_non_virus,
                   c.ece_before, c.ece_after)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Everything ``run_info.json`` holds, typed. Field order is the file's key order."""

    run_info_version: int
    virnucpro_version: str
    created: str
    host: str
    python: str
    platform: str
    torch: str
    parameters: dict[str, Any]
    persistent_models: bool
    input: InputInfo
    models: dict[str, ModelInfo]
    demo_models: bool
    warning: str | None
    devices: tuple[str, ...]
    precision: Precision
    stages: tuple[StageInfo, ...]
    classify: ClassifyReport
    report: ReportResult
    thresholds: ThresholdsInfo
    regions: RegionsInfo
    calibration: CalibrationInfo | None
    memory_checkpoints: tuple[MemoryCheckpoint, ...]
    timings_seconds: dict[str, float]
    outputs: dict[str, str]

    @property
    def chunk_length(self) -> int:
        return int(self.parameters["chunk_length"])

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "models":
                value = {kind: model.to_dict() for kind, model in value.items()}
            elif f.name == "precision":
                value = value.value
            elif f.name == "devices":
                value = list(value)
            elif f.name in ("stages", "memory_checkpoints"):
                value = [asdict(v) for v in value]
            elif f.name in ("input", "classify", "report", "thresholds", "regions"):
                value = asdict(value)
            elif f.name == "calibration":
                value = None if value is None else asdict(value)
            data[f.name] = value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunInfo":
        values = dict(data)
        values["input"] = InputInfo(**data["input"])
        values["models"] = {kind: ModelInfo(**m) for kind, m in data["models"].items()}
        values["devices"] = tuple(data["devices"])
        values["precision"] = Precision(data["precision"])
        values["stages"] = tuple(StageInfo(**s) for s in data["stages"])
        values["classify"] = ClassifyReport(**data["classify"])
        values["report"] = ReportResult(**data["report"])
        values["thresholds"] = ThresholdsInfo(**data["thresholds"])
        values["regions"] = RegionsInfo(**data["regions"])
        values["calibration"] = CalibrationInfo(**data["calibration"]) if data["calibration"] else None
        values["memory_checkpoints"] = tuple(MemoryCheckpoint.from_dict(c) for c in data["memory_checkpoints"])
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> "RunInfo":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def config_dict(config: RunConfig) -> dict[str, Any]:
    """The run's parameters as JSON values (paths as strings, enums as their values)."""
    data = asdict(config)
    for key, value in list(data.items()):
        if isinstance(value, Path):
            data[key] = str(value)
    data["models"] = {k: (str(v) if v is not None else None) for k, v in data["models"].items()}
    data["device"] = config.device.value
    data["precision"] = config.precision.value
    data["gpus"] = list(config.gpus) if config.gpus else None
    return data


def build_run_info(
    plan: RunPlan,
    prepared: PreparedSample,
    stages: tuple[StageReport, ...],
    classify: ClassifyReport,
    report: ReportResult,
    checkpoints: tuple[MemoryCheckpoint, ...],
    timings: dict[str, float],
    checksums: dict[str, dict[str, Any]],
) -> RunInfo:
    """The run's provenance record from its plan and what each step reported."""
    import torch

    paths: OutputPaths = prepared.paths.published()  # where the outputs end up
    demo = plan.demo_models
    return RunInfo(
        run_info_version=RUN_INFO_VERSION,
        virnucpro_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        host=socket.gethostname(),
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__,
        parameters=config_dict(plan.config),
        persistent_models=plan.persistent_models,
        input=InputInfo(
            path=str(prepared.input_path),
            sha256=prepared.input_sha256,
            records=prepared.n_records,
            chunks=prepared.n_chunks,
            frames=prepared.n_frames,
            shards=len(prepared.shards),
        ),
        models={kind: ModelInfo(**entry) for kind, entry in checksums.items()},
        demo_models=demo,
        warning=DEMO_WARNING if demo else None,
        devices=tuple(d.name for d in plan.devices),
        precision=plan.spec.precision,
        stages=tuple(StageInfo.of(r) for r in stages),
        classify=classify,
        report=report,
        thresholds=ThresholdsInfo.of(plan.calling),
        regions=RegionsInfo.of(plan.calling),
        calibration=CalibrationInfo.of(plan.calling),
        memory_checkpoints=tuple(checkpoints),
        timings_seconds={k: round(v, 4) for k, v in timings.items()},
        outputs={
            "prediction_results": str(paths.prediction_results),
            "highest_score": str(paths.highest_score),
            "sequences": str(paths.sequences),
            "regions": str(paths.regions),
            "virus_fasta": str(paths.virus_fasta),
            "provirus_fasta": str(paths.provirus_fasta),
            "report": str(paths.report),
        },
    )
