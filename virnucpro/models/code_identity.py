"""The identity of the code that computes an embedding: the SHA-256 of ``virnucpro/models``' source.

Cached embeddings (a run's feature files, the cross-run embedding cache) record it, so a build
whose version string did not change but whose model code did (a development checkout, a patched
kernel) never reuses embeddings an earlier build computed.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["models_code_sha256"]


@functools.cache
def models_code_sha256() -> str:
    """SHA-256 over every ``.py`` file below ``virnucpro/models`` (relative path and bytes, sorted)."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
