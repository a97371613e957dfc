"""run_info.json: provenance beside every output (version, parameters, checksums, device, timings)."""

from __future__ import annotations

import json
import platform
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virnucpro import __version__
from virnucpro.config import RunConfig
from virnucpro.domain.atomic import atomic_write_text
from virnucpro.models.discovery import ResolvedModels
from virnucpro.pipeline.devices import WorkerDevice

if TYPE_CHECKING:
    from virnucpro.pipeline.prediction import PredictionResult

__all__ = ["ModelChecksums", "build_run_info", "write_run_info", "config_dict", "RUN_INFO_VERSION"]

RUN_INFO_VERSION = 1


class ModelChecksums:
    """SHA-256 of every model file, computed in a background thread while the run goes on."""

    def __init__(self, models: ResolvedModels) -> None:
        self._models = models
        self._result: dict[str, dict[str, Any]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="virnucpro-sha256", daemon=True)

    @classmethod
    def start(cls, models: ResolvedModels) -> "ModelChecksums":
        checksums = cls(models)
        checksums._thread.start()
        return checksums

    def _run(self) -> None:
        try:
            for location in self._models:
                started = time.perf_counter()
                self._result[location.kind] = {
                    "path": str(location.path),
                    "file": str(location.weights_file),
                    "sha256": location.sha256(),
                    "source": location.source,
                    "found_via": location.found_via,
                    "size": location.weights_file.stat().st_size,
                    "hash_seconds": round(time.perf_counter() - started, 3),
                }
                if location.kind == "dnabert" and location.tokenizer_file is not None:
                    from virnucpro.domain.checksums import sha256_file

                    self._result[location.kind]["tokenizer"] = str(location.tokenizer_file)
                    self._result[location.kind]["tokenizer_sha256"] = sha256_file(location.tokenizer_file)
        except BaseException as exc:  # reported in result()
            self._error = exc

    def result(self) -> dict[str, dict[str, Any]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._result)


def config_dict(config: RunConfig) -> dict[str, Any]:
    data = asdict(config)
    for key, value in list(data.items()):
        if isinstance(value, Path):
            data[key] = str(value)
    data["models"] = {k: (str(v) if v is not None else None) for k, v in data["models"].items()}
    data["device"] = config.device.value
    data["precision"] = config.precision.value if config.precision else "auto"
    data["gpus"] = list(config.gpus) if config.gpus else None
    return data


def build_run_info(
    config: RunConfig,
    result: "PredictionResult",
    models: ResolvedModels,
    checksums: dict[str, dict[str, Any]],
    devices: list[WorkerDevice],
    precision: str,
    persistent_models: bool,
) -> dict[str, Any]:
    from virnucpro.pipeline.stages import stage_report_dict

    import torch

    demo = result.demo_models
    prepared = result.prepared
    info: dict[str, Any] = {
        "run_info_version": RUN_INFO_VERSION,
        "virnucpro_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "parameters": config_dict(config),
        "persistent_models": persistent_models,
        "input": {
            "path": str(prepared.input_path),
            "sha256": prepared.input_sha256,
            "records": prepared.n_records,
            "chunks": prepared.n_chunks,
            "frames": prepared.n_frames,
            "shards": len(prepared.shards),
        },
        "models": checksums,
        "demo_models": demo,
        "warning": (
            "DEMO MODELS WITH RANDOM WEIGHTS: every call in these outputs is meaningless"
            if demo else None
        ),
        "devices": [d.name for d in devices],
        "precision": precision,
        "stages": [stage_report_dict(r) for r in result.stages],
        "classify": asdict(result.classify),
        "report": asdict(result.report),
        "memory_checkpoints": [c.to_dict() for c in result.checkpoints],
        "timings_seconds": {k: round(v, 4) for k, v in result.timings.items()},
        "outputs": {
            "prediction_results": str(result.paths.prediction_results),
            "highest_score": str(result.paths.highest_score),
            "sequences": str(result.paths.sequences),
            "report": str(result.paths.report),
        },
    }
    return info


def write_run_info(path: Path, info: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=False) + "\n")
