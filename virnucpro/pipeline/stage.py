"""The two feature stages, as a closed set."""

from __future__ import annotations

import enum

__all__ = ["FeatureStage"]


class FeatureStage(enum.Enum):
    DNABERT = "dnabert"
    ESM = "esm"

    @property
    def label(self) -> str:
        return {"dnabert": "DNABERT-S", "esm": "ESM-2"}[self.value]
