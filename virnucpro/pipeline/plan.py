"""RunPlan: the resolved models, devices and worker settings of one run (started nothing yet).

Planning imports no torch (file names, NVML, the options), so a run starts its workers — which
import torch themselves — before the parent imports it to check that the models fit together
(:func:`check_run_models`, the step after the workers' start).
"""

from __future__ import annotations

from dataclasses import dataclass

from virnucpro.config import Precision, RunConfig
from virnucpro.errors import ConfigError
from virnucpro.models.compatibility import ModelDims, check_compatibility
from virnucpro.models.discovery import ResolvedModels, resolve_models
from virnucpro.pipeline.calling import CallSettings, calling_settings
from virnucpro.pipeline.devices import WorkerDevice, plan_devices
from virnucpro.pipeline.embedding_cache import cache_dir_error
from virnucpro.pipeline.messages import WorkerSpec
from virnucpro.pipeline.stage import FEATURE_STAGES

__all__ = ["RunPlan", "plan_run", "resolve_run_models", "check_run_models"]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Resolved models, devices, worker and calling settings of one run. Small typed records."""

    config: RunConfig
    models: ResolvedModels
    devices: tuple[WorkerDevice, ...]
    spec: WorkerSpec
    persistent_models: bool
    calling: CallSettings

    @property
    def demo_models(self) -> bool:
        return any(m.source == "demo" for m in self.models)

    @property
    def on_gpu(self) -> bool:
        return any(d.is_cuda for d in self.devices)


def resolve_run_models(config: RunConfig) -> ResolvedModels:
    """The three model files of ``config`` (ModelNotFoundError names what is missing)."""
    paths = config.models
    return resolve_models(paths.dnabert, paths.esm, paths.classifier, config.chunk_length,
                          origin=paths.origin)


def check_run_models(plan: RunPlan) -> ModelDims:
    """The models' sizes, checked to fit together (classifier input = DNABERT-S + ESM-2 widths;
    a 300/500 classifier name against the chunk length). Reads the three files' headers, so it
    imports torch: a run calls it after starting its workers, before any work."""
    return check_compatibility(plan.models, plan.config.chunk_length)


def plan_run(config: RunConfig, persistent_models: bool) -> RunPlan:
    """Resolve the calling settings, models and devices; start nothing. Whether the models fit
    together is :func:`check_run_models`'s (it reads the files)."""
    calling = calling_settings(config)  # first: a bad threshold fails before any model is looked for
    if config.embedding_cache is not None and (problem := cache_dir_error(config.embedding_cache)):
        raise ConfigError(problem)
    models = resolve_run_models(config)
    devices = tuple(plan_devices(config))
    on_gpu = any(d.is_cuda for d in devices)
    if config.precision is Precision.FP8 and not on_gpu:  # the GPU's capability: checked by the worker
        from virnucpro.models.fast.fp8 import fp8_device_problem  # torch: imported only here

        raise ConfigError(fp8_device_problem("cpu") or "fp8 needs a GPU")
    spec = WorkerSpec(
        dnabert_path=models.dnabert.path,
        esm_path=models.esm.path,
        precision=config.precision.resolve(on_gpu),
        on_gpu=on_gpu,
        preload=FEATURE_STAGES,
        toks_per_batch=config.toks_per_batch,
    )
    return RunPlan(config, models, devices, spec, persistent_models, calling)
