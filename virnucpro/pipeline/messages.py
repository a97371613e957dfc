"""Messages between the parent and its worker processes (all picklable, all typed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from virnucpro.config import Precision
from virnucpro.pipeline.stage import FeatureStage

__all__ = [
    "WorkerSpec",
    "EmbedTask",
    "StageEnd",
    "WorkerReady",
    "BatchDone",
    "TaskDone",
    "TaskFailed",
    "StageEnded",
    "WorkerFatal",
]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs to load its models. Paths and enums only."""

    dnabert_path: Path
    esm_path: Path
    precision: Precision  # resolved by the parent (never AUTO)
    on_gpu: bool
    preload: tuple[FeatureStage, ...]
    toks_per_batch: int | None = None
    compile_models: bool = False


@dataclass(frozen=True, slots=True)
class EmbedTask:
    task_id: int
    stage: FeatureStage
    shard_path: Path
    out_path: Path


@dataclass(frozen=True, slots=True)
class StageEnd:
    """Sent at a stage boundary: free cached memory; ``release`` also unloads the stage's model."""

    stage: FeatureStage
    release: bool


@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker: str
    pid: int
    loaded: tuple[str, ...]
    load_seconds: float
    allocator_conf: str
    device_name: str
    cuda_visible_devices: str | None = None
    # where load_seconds went, per model: "<model> read" (file read, weights placed on the device)
    # and "<model> warm-up" (compilation, warm-up batches, the packed self-check); the models are
    # read concurrently, so the reads overlap
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelWarm:
    """A model the worker read before :class:`WorkerReady` but warmed up after it (while it had
    no task waiting, or at its stage's first task): ``phases`` as WorkerReady's, for this model."""

    worker: str
    stage: str
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchDone:
    """One batch of a task computed: progress inside a shard (a one-shard sample is not 0/1 for
    minutes). ``n_frames``/``n_tokens`` are this batch's, not running totals."""

    worker: str
    task_id: int
    n_frames: int
    n_tokens: int


@dataclass(frozen=True, slots=True)
class TaskDone:
    worker: str
    task_id: int
    n_frames: int
    n_tokens: int
    padded_tokens: int
    seconds: float
    peak_mib: float
    oom_retries: int
    model_loads: dict[str, int] = field(default_factory=dict)
    fp32_recomputed: int = 0  # frames whose embedding was non-finite and was computed in fp32


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A task failed; ``errno`` is set for a disk error (full, read-only, permission): the parent
    then stops instead of retrying."""

    worker: str
    task_id: int
    error: str
    errno: int | None = None


@dataclass(frozen=True, slots=True)
class StageEnded:
    worker: str
    stage: FeatureStage
    peak_mib: float
    allocated_mib: float
    reserved_mib: float
    model_loads: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerFatal:
    """The worker cannot run at all (e.g. a model file fails to load); the run must stop."""

    worker: str
    error: str
    error_type: str
