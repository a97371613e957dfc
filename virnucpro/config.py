"""One configuration tree, built by both the CLI and the Prefect flow. Each default stated once."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from virnucpro.errors import ConfigError

__all__ = [
    "CHUNK_LENGTHS",
    "DEFAULT_CHUNK_LENGTH",
    "Precision",
    "GPU_DEFAULT_PRECISION",
    "DeviceKind",
    "ModelOrigin",
    "ModelPaths",
    "RunConfig",
]

CHUNK_LENGTHS = (300, 500)
DEFAULT_CHUNK_LENGTH = 500


class Precision(enum.Enum):
    """Arithmetic precision of the two encoders. The classifier always runs in fp32.

    ``AUTO`` is what the user asked for when choosing nothing; :meth:`resolve` turns it into the
    precision that runs on a device. Every other layer receives a resolved member.
    """

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"  # ESM-2's linear layers in FP8 e4m3 (CUDA, compute capability >= 8.9), the rest bf16

    @classmethod
    def parse(cls, value: "str | Precision") -> "Precision":
        if isinstance(value, Precision):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ConfigError(f"precision '{value}' is not known; use one of {choices}") from None

    @classmethod
    def concrete(cls) -> tuple["Precision", ...]:
        """The precisions that run (every member but ``AUTO``)."""
        return tuple(p for p in cls if p is not cls.AUTO)

    def resolve(self, on_gpu: bool) -> "Precision":
        """The precision that runs: a chosen one as it is; ``AUTO`` the device's default."""
        if self is not Precision.AUTO:
            return self
        return GPU_DEFAULT_PRECISION if on_gpu else Precision.FP32

    @property
    def bytes_per_element(self) -> int:
        """Bytes of one activation element (for sizing token budgets)."""
        if self is Precision.AUTO:
            raise ValueError("resolve() the precision before sizing memory")
        return 4 if self is Precision.FP32 else 2


GPU_DEFAULT_PRECISION = Precision.FP16
"""What ``--precision auto`` (the default) runs on a GPU: fp16 matrix products with the fp32
residual stream and layer norms (ESM-2 was trained in fp16; Meta's ESMFold runs it in fp16). On an
H200 with full-size random weights: ESM-2 cosine 1.000000 and DNABERT-S 0.999996 against fp32,
labels 100% equal, at 15x the fp32 path's speed (docs/benchmarks.md). An embedding that comes out
non-finite is computed again in fp32 by the worker (counted in run_info.json). ``--precision fp32``
keeps the original's exact arithmetic; the CPU always runs fp32."""


class DeviceKind(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    @classmethod
    def parse(cls, value: "str | DeviceKind") -> "DeviceKind":
        if isinstance(value, DeviceKind):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"device '{value}' is not known; use auto, cpu or cuda") from None


ModelOrigin = Literal["option", "parameter"]
"""How an entry point names the paths it is given: the CLI's options (``--dnabert-model``) or a
flow's parameters (``dnabert_model``); logs and errors name an explicit path the same way."""


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Explicit model locations; ``None`` means: discover (environment, caches)."""

    dnabert: Path | None = None
    esm: Path | None = None
    classifier: Path | None = None
    origin: ModelOrigin = "option"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one prediction run needs. Paths, numbers and flags only; no models."""

    input_fasta: Path
    output_dir: Path
    chunk_length: int = DEFAULT_CHUNK_LENGTH
    models: ModelPaths = field(default_factory=ModelPaths)
    device: DeviceKind = DeviceKind.AUTO
    precision: Precision = Precision.AUTO  # AUTO = the device's default (Precision.resolve)
    gpus: tuple[int, ...] | None = None  # None = every visible GPU
    persistent_models: bool = False
    toks_per_batch: int | None = None  # None = sized from free device memory
    shard_frames: int = 4096  # frames per work unit handed to a worker
    resume: bool = True
    # Calls, regions, calibration (virnucpro.domain.thresholds / regions / calibration; resolved
    # and checked by virnucpro.pipeline.calling, which may import the domain):
    preset: str = "default"  # relaxed | default | conservative
    min_score: float | None = None  # None = the preset's
    min_virus_fraction: float | None = None  # None = the preset's
    smooth_window: int = 1  # odd number of chunks; 1 = no smoothing
    max_gap: int = 1  # unscored chunks a region may bridge
    min_region_length: int = 1000  # bp; shorter provirus regions are dropped
    calibration: Path | None = None  # a file of `virnucpro calibrate`
    embedding_cache: Path | None = None  # a directory shared by runs (virnucpro.pipeline.embedding_cache)

    def __post_init__(self) -> None:
        if self.chunk_length not in CHUNK_LENGTHS:
            raise ConfigError(
                f"chunk length {self.chunk_length} is not supported; use 300 or 500 "
                "(the lengths the published classifiers were trained on)"
            )
        if self.shard_frames < 1:
            raise ConfigError("shard_frames must be at least 1")
        if self.toks_per_batch is not None and self.toks_per_batch < 1:
            raise ConfigError("toks_per_batch must be at least 1 (or unset for automatic sizing)")
