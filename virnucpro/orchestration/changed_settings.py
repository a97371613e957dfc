"""Whether a finished sample's outputs were made with tonight's settings.

A night skips a sample whose output directory holds its DONE marker (same content). Its outputs
may still come from other settings: another classifier, other thresholds, another precision. The
night reports those samples (status ``already-done``, ``settings_changed`` naming what differs) and,
with ``rerun_changed``, runs them again: the re-run reuses every cached stage its settings leave
valid (:mod:`virnucpro.pipeline.work_keys`), so new thresholds cost a re-scoring, not a re-embedding.

Compared: the run parameters that change what a run writes (:data:`OUTPUT_PARAMETERS`), as
``run_info.json`` records them against the same parameters built for tonight (one normalisation:
:func:`~virnucpro.pipeline.parameters.build_config` then
:func:`~virnucpro.pipeline.run_info.config_dict`). Models are compared as given (paths, or
"discovered"); the device, GPUs, batch size, worker pool and embedding cache change how fast a run
is, not what it writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virnucpro.domain.outputs import OutputPaths
from virnucpro.errors import ConfigError
from virnucpro.pipeline.parameters import build_config
from virnucpro.pipeline.run_info import config_dict

__all__ = ["OUTPUT_PARAMETERS", "changed_settings"]

OUTPUT_PARAMETERS: tuple[str, ...] = (
    "chunk_length", "dnabert_model", "esm_model", "classifier", "precision", "preset", "min_score",
    "min_virus_fraction", "smooth_window", "max_gap", "min_region_length", "calibration",
)
_MODEL_KEYS = {"dnabert_model": "dnabert", "esm_model": "esm", "classifier": "classifier"}


def _recorded(values: Mapping[str, Any], name: str) -> Any:
    if name in _MODEL_KEYS:
        return (values.get("models") or {}).get(_MODEL_KEYS[name])
    return values.get(name)


def changed_settings(output_dir: Path, input_fasta: Path, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The :data:`OUTPUT_PARAMETERS` whose value in ``params`` differs from the one recorded in
    ``output_dir/run_info.json`` (``("run_info.json",)`` when that file cannot be read)."""
    try:
        recorded = json.loads(OutputPaths.for_dir(output_dir).run_info.read_text(encoding="utf-8"))["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return ("run_info.json",)
    wanted = {name: params[name] for name in OUTPUT_PARAMETERS if name in params}
    try:
        tonight = config_dict(build_config({"input_fasta": input_fasta, **wanted}))
    except ConfigError:
        return ()  # tonight's own parameters are wrong: its runs will say so
    return tuple(name for name in OUTPUT_PARAMETERS
                 if _recorded(tonight, name) != _recorded(recorded, name))
