"""pynvml-backed device memory probe, read at named checkpoints; a CPU worker's peak RSS.

Without NVML (CPU machines, CI) :func:`read_checkpoint` returns a checkpoint that says
"NVML unavailable: <why>" and the run goes on. A CPU worker has no torch CUDA peak to report;
it reports its process's peak resident memory instead (:func:`process_peak_rss_mib`), reset at
each stage end like the CUDA peak (:func:`reset_process_peak_rss`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field

__all__ = [
    "ProcessMemory",
    "DeviceMemory",
    "MemoryCheckpoint",
    "read_checkpoint",
    "process_peak_rss_mib",
    "reset_process_peak_rss",
]

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


def process_peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` (Linux, resettable), else
    ``ru_maxrss``; 0.0 where neither can be read."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # POSIX only

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / _MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kB
    except (ImportError, OSError):
        return 0.0


def reset_process_peak_rss() -> None:
    """Start a new peak (Linux: ``5`` to ``/proc/self/clear_refs``); best effort elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass
