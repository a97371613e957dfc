"""The demo models' marker file: how a model file is known to be a random-weight DEMO model.

Imports nothing heavy: model discovery asks it for every model of every run, before the parent
process imports torch (:mod:`virnucpro.models.demo` builds the demo models and writes the marker).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEMO_MARKER", "is_demo_model"]

DEMO_MARKER = "DEMO_MODELS.json"
"""The marker's file name, beside the demo models it lists (``{"files": [...]}``)."""


def is_demo_model(path: Path) -> bool:
    """Whether ``path`` (or the directory/file it lies in) is listed in a demo marker."""
    path = Path(path).resolve()
    for parent in [path, *path.parents][:4]:
        marker = parent / DEMO_MARKER
        if not marker.is_file():
            continue
        try:
            listed = json.loads(marker.read_text()).get("files", [])
        except (OSError, ValueError):
            return True  # a damaged marker still marks the directory as demo
        for name in listed:
            target = (parent / name).resolve()
            if path == target or target in path.parents:
                return True
    return False
