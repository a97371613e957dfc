"""One configuration tree, built by both the CLI and the Prefect flow. Each default stated once."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro.errors import ConfigError

__all__ = [
    "CHUNK_LENGTHS",
    "DEFAULT_CHUNK_LENGTH",
    "Precision",
    "DeviceKind",
    "ModelPaths",
    "RunConfig",
]

CHUNK_LENGTHS = (300, 500)
DEFAULT_CHUNK_LENGTH = 500


class Precision(enum.Enum):
    """Arithmetic precision of the two encoders. The classifier always runs in fp32."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @classmethod
    def parse(cls, value: "str | Precision | None") -> "Precision | None":
        if value is None or isinstance(value, Precision):
            return value
        if value == "auto":
            return None
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ConfigError(
                f"precision '{value}' is not known; use one of {choices} or auto"
            ) from None


class DeviceKind(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    @classmethod
    def parse(cls, value: "str | DeviceKind") -> "DeviceKind":
        if isinstance(value, DeviceKind):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"device '{value}' is not known; use auto, cpu or cuda") from None


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Explicit model locations; ``None`` means: discover (environment, caches)."""

    dnabert: Path | None = None
    esm: Path | None = None
    classifier: Path | None = None


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one prediction run needs. Paths, numbers and flags only; no models."""

    input_fasta: Path
    output_dir: Path
    chunk_length: int = DEFAULT_CHUNK_LENGTH
    models: ModelPaths = field(default_factory=ModelPaths)
    device: DeviceKind = DeviceKind.AUTO
    precision: Precision | None = None  # None = the device's default (fp32 on CPU)
    gpus: tuple[int, ...] | None = None  # None = every visible GPU
    persistent_models: bool = False
    toks_per_batch: int | None = None  # None = sized from free device memory
    shard_frames: int = 4096  # frames per work unit handed to a worker
    resume: bool = True

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
