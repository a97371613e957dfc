"""The identity of the code that computes an embedding: the SHA-256 of ``virnucpro/models``' source
and of the package's data files (DNABERT-S's tokenizer, FP8's calibration proteins).

Cached embeddings (a run's feature files, the cross-run embedding cache) record it, so a build
whose version string did not change but whose model code or data did (a development checkout, a
patched kernel, another calibration set) never reuses embeddings an earlier build computed.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["models_code_sha256"]


@functools.cache
def models_code_sha256() -> str:
    """SHA-256 over every ``.py`` file below ``virnucpro/models`` and every file below
    ``virnucpro/data`` (path relative to ``virnucpro``, and bytes; sorted)."""
    package = Path(__file__).parents[1]
    files = [*(package / "models").rglob("*.py"), *(p for p in (package / "data").rglob("*") if p.is_file())]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
