"""Which worker processes to start, and on which device, without initialising CUDA here.

The parent never touches CUDA: the GPU count comes from NVML (or, failing that, from torch's
NVML-based count), and each worker is pinned by ``CUDA_VISIBLE_DEVICES`` set by the parent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from virnucpro.config import DeviceKind, RunConfig
from virnucpro.errors import ConfigError

__all__ = ["WorkerDevice", "plan_devices", "visible_gpu_count"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerDevice:
    """One worker's device. ``cuda_visible_devices`` is None for a CPU worker."""

    name: str
    cuda_visible_devices: str | None

    @property
    def is_cuda(self) -> bool:
        return self.cuda_visible_devices is not None


def _parent_visible_ids() -> list[str] | None:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip() != ""]


def visible_gpu_count() -> int:
    """GPUs this process may use, without creating a CUDA context."""
    visible = _parent_visible_ids()
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            total = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing (CPU machine) or broken driver
        total = 0
    if visible is not None:
        return min(len(visible), total) if total else 0
    return total


def plan_devices(config: RunConfig) -> list[WorkerDevice]:
    """One worker per requested GPU; one CPU worker when running on the CPU."""
    kind = config.device
    n_gpus = 0 if kind is DeviceKind.CPU else visible_gpu_count()
    if kind is DeviceKind.CUDA and n_gpus == 0:
        raise ConfigError(
            "--device cuda was requested but no GPU is visible (NVML found none); "
            "run with --device cpu or check the NVIDIA driver and CUDA_VISIBLE_DEVICES"
        )
    if n_gpus == 0:
        if config.gpus:
            raise ConfigError(
                f"--gpus {','.join(map(str, config.gpus))} was given but no GPU is visible; "
                "drop --gpus or run on a GPU host"
            )
        return [WorkerDevice(name="cpu", cuda_visible_devices=None)]
    indices = list(config.gpus) if config.gpus else list(range(n_gpus))
    bad = [i for i in indices if i < 0 or i >= n_gpus]
    if bad:
        raise ConfigError(
            f"--gpus names GPU {bad[0]}, but only {n_gpus} GPU(s) are visible (0..{n_gpus - 1})"
        )
    if len(set(indices)) != len(indices):
        raise ConfigError("--gpus lists a GPU twice; list each GPU once")
    parent_ids = _parent_visible_ids()
    devices = []
    for i in indices:
        physical = parent_ids[i] if parent_ids is not None else str(i)
        devices.append(WorkerDevice(name=f"cuda:{physical}", cuda_visible_devices=physical))
    return devices
