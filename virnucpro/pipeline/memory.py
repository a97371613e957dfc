"""pynvml-backed device memory probe, read at named checkpoints.

Without NVML (CPU machines, CI) :func:`read_checkpoint` returns a checkpoint that says
"NVML unavailable: <why>" and the run goes on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field

__all__ = ["ProcessMemory", "DeviceMemory", "MemoryCheckpoint", "read_checkpoint"]

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    pid: int
    used_mib: float


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    index: int
    name: str
    used_mib: float
    free_mib: float
    total_mib: float
    processes: tuple[ProcessMemory, ...] = ()


@dataclass(frozen=True, slots=True)
class MemoryCheckpoint:
    """Device memory at one named point of a run."""

    name: str
    time: float
    devices: tuple[DeviceMemory, ...] = ()
    nvml_available: bool = True
    note: str = ""
    worker_peaks_mib: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryCheckpoint":
        devices = tuple(
            DeviceMemory(**{**d, "processes": tuple(ProcessMemory(**p) for p in d.get("processes", ()))})
            for d in data.get("devices", ())
        )
        return cls(**{**data, "devices": devices})


def _visible_indices(count: int) -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    out = []
    for token in visible.split(","):
        token = token.strip()
        if token.isdigit() and int(token) < count:
            out.append(int(token))
    return out


def read_checkpoint(name: str, worker_peaks_mib: dict[str, float] | None = None) -> MemoryCheckpoint:
    """Read used/free/total and per-process memory of every visible GPU through NVML."""
    peaks = dict(worker_peaks_mib or {})
    now = time.time()
    try:
        import pynvml
    except ImportError as exc:
        return MemoryCheckpoint(name, now, (), False, f"NVML unavailable: {exc}", peaks)
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError subclasses; message says why
        return MemoryCheckpoint(name, now, (), False, f"NVML unavailable: {exc}", peaks)
    try:
        devices = []
        for index in _visible_indices(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name_raw = pynvml.nvmlDeviceGetName(handle)
            dev_name = name_raw.decode() if isinstance(name_raw, bytes) else str(name_raw)
            try:
                procs = tuple(
                    ProcessMemory(p.pid, (p.usedGpuMemory or 0) / _MIB)
                    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                )
            except Exception:
                procs = ()
            devices.append(
                DeviceMemory(
                    index=index,
                    name=dev_name,
                    used_mib=info.used / _MIB,
                    free_mib=info.free / _MIB,
                    total_mib=info.total / _MIB,
                    processes=procs,
                )
            )
        note = "" if devices else "NVML available but no GPU is visible"
        return MemoryCheckpoint(name, now, tuple(devices), True, note, peaks)
    except Exception as exc:
        return MemoryCheckpoint(name, now, (), False, f"NVML unavailable: {exc}", peaks)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
