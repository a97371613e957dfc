"""The two feature stages, as a closed set, in the order a run computes them."""

from __future__ import annotations

import enum

__all__ = ["FeatureStage", "FEATURE_STAGES"]


class FeatureStage(enum.Enum):
    DNABERT = "dnabert"
    ESM = "esm"

    @property
    def label(self) -> str:
        return {"dnabert": "DNABERT-S", "esm": "ESM-2"}[self.value]


FEATURE_STAGES: tuple[FeatureStage, ...] = (FeatureStage.DNABERT, FeatureStage.ESM)
"""DNABERT-S first, then ESM-2, as the original runs them."""
