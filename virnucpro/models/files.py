"""Model file names shared by discovery (finding the files) and the readers (loading them).

Imports nothing heavy: the parent process finds models and starts its workers before it imports
torch (the workers import it at the same time).
"""

from __future__ import annotations

__all__ = ["WEIGHT_FILES"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""A DNABERT-S directory's weight files, in the order they are looked for."""
