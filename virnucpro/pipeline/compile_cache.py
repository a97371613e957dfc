"""Where the workers keep compiled kernels, so a later process starts warm.

torch.compile (Inductor) and Triton cache what they compile; by default in ``/tmp``, which a
reboot or a tmp cleaner empties. A worker gets ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``
in the user's cache directory (``$XDG_CACHE_HOME/virnucpro/`` or ``~/.cache/virnucpro/``) — a
variable the user has set is never overridden, and an unwritable cache directory is left alone
(the libraries' own defaults apply).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["COMPILE_CACHE_VARS", "compile_cache_env"]

logger = logging.getLogger(__name__)

COMPILE_CACHE_VARS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
"""Each variable and its folder under the VirNucPro cache directory."""


def cache_root(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/virnucpro``, else ``~/.cache/virnucpro``."""
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "virnucpro"


def compile_cache_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to set for a worker: those of :data:`COMPILE_CACHE_VARS` not set already,
    pointing at folders that exist (created here) and are writable."""
    env = os.environ if environ is None else environ
    result: dict[str, str] = {}
    for name, folder in COMPILE_CACHE_VARS.items():
        if env.get(name):
            continue
        path = cache_root(env) / folder
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.debug("compile cache %s not usable (%s); %s keeps its default", path, exc, name)
            continue
        if os.access(path, os.W_OK | os.X_OK):
            result[name] = str(path)
    return result
