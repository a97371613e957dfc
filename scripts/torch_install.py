"""Which ``pip install`` arguments set-up uses for torch (called by ``scripts/setup.sh``).

- An NVIDIA GPU (``nvidia-smi -L`` lists one): the package index's torch in the project's range
  (a CUDA build), as before.
- No GPU, and PyTorch's CPU wheel index answers: ``torch==2.13.0 --index-url <that index>``, so
  pip fetches the ~200 MB CPU build, not the multi-GB CUDA build the public package index serves.
  The index is ``$VIRNUCPRO_TORCH_CPU_INDEX`` (default: PyTorch's documented CPU index).
- No GPU, and the CPU index does not answer within a few seconds (offline, a mirror-only site):
  plain ``torch==2.13.0`` from whatever index pip is configured with.

Prints the arguments one per line on stdout and the reason on stderr. Standard library only: it
runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = [
    "CPU_TORCH",
    "GPU_TORCH",
    "CPU_INDEX_VARIABLE",
    "DEFAULT_CPU_INDEX",
    "PROBE_TIMEOUT_S",
    "pip_arguments",
    "index_reachable",
    "has_nvidia_gpu",
    "main",
]

CPU_TORCH = "torch==2.13.0"
GPU_TORCH = "torch>=2.4,<2.15"  # the range of pyproject.toml
CPU_INDEX_VARIABLE = "VIRNUCPRO_TORCH_CPU_INDEX"
DEFAULT_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 5.0


def pip_arguments(gpu: bool, cpu_index: str | None) -> list[str]:
    """The decision: ``cpu_index`` is the CPU index when it answered, else None."""
    if gpu:
        return [GPU_TORCH]
    if cpu_index:
        return [CPU_TORCH, "--index-url", cpu_index]
    return [CPU_TORCH]


def index_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether the index's ``torch/`` page answers within ``timeout`` s; and why not."""
    page = url.rstrip("/") + "/torch/"
    request = urllib.request.Request(page, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
    except urllib.error.HTTPError as exc:
        return False, f"{page} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{page} is unreachable ({reason}; waited at most {timeout:g} s)"
    if status >= 400:
        return False, f"{page} answered HTTP {status}"
    return True, ""


def has_nvidia_gpu() -> bool:
    """``nvidia-smi -L`` exists, succeeds and lists a GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Print the pip arguments (one per line); ``--gpu``/``--no-gpu`` skip the GPU check."""
    args = list(sys.argv[1:] if argv is None else argv)
    gpu = True if "--gpu" in args else False if "--no-gpu" in args else has_nvidia_gpu()
    index = environ.get(CPU_INDEX_VARIABLE) or DEFAULT_CPU_INDEX
    reachable_index: str | None = None
    if gpu:
        print(f"torch: an NVIDIA GPU is present: {GPU_TORCH} from the configured index",
              file=sys.stderr)
    else:
        ok, why = index_reachable(index)
        if ok:
            reachable_index = index
            print(f"torch: no NVIDIA GPU: the CPU build {CPU_TORCH} from {index} "
                  f"(${CPU_INDEX_VARIABLE})", file=sys.stderr)
        else:
            print(f"torch: no NVIDIA GPU; PyTorch's CPU index: {why}; so {CPU_TORCH} from the "
                  "configured index instead", file=sys.stderr)
    for word in pip_arguments(gpu, reachable_index):
        print(word)
    return 0


if __name__ == "__main__":
    sys.exit(main())
