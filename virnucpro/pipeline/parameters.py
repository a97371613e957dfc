"""The run parameters, stated once: name, type, default, help.

Every entry point takes the same parameters: the CLI's ``virnucpro predict`` options are generated
from :data:`RUN_PARAMETERS`, ``python flows/predict.py``'s options too, and the Prefect flows spell
their signatures out (Prefect reads them) with the annotations and defaults taken from here; a test
keeps the flow signatures equal to this table. :func:`build_config` is the one place raw values
(strings from a command line, JSON from a deployment) become a :class:`~virnucpro.config.RunConfig`.

Defaults come from :class:`RunConfig` itself, so each default is stated once, in ``config.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from virnucpro.config import CHUNK_LENGTHS, DeviceKind, ModelOrigin, ModelPaths, Precision, RunConfig
from virnucpro.domain.outputs import default_output_dir
from virnucpro.domain.thresholds import PRESETS, Preset
from virnucpro.errors import ConfigError

__all__ = [
    "RunParameter",
    "RUN_PARAMETERS",
    "DeviceName",
    "PrecisionName",
    "PresetName",
    "parameter",
    "parse_gpus",
    "build_config",
    "parameters_docstring",
    "add_argparse_option",
]

_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}

DeviceName = Literal[tuple(d.value for d in DeviceKind)]  # type: ignore[valid-type]
PrecisionName = Literal[tuple(p.value for p in Precision)]  # type: ignore[valid-type]
PresetName = Literal[tuple(p.value for p in Preset)]  # type: ignore[valid-type]


def _default(name: str) -> Any:
    value = _FIELDS[name].default
    return value.value if isinstance(value, (DeviceKind, Precision)) else value


def _preset_values(name: str) -> str:
    """``relaxed 0.4, default 0.5, ...``: each preset's value of a threshold, for the help text."""
    def shown(value: float | None) -> str:
        return "the original rule" if value is None else f"{value:g}"

    return ", ".join(f"{p.value} {shown(getattr(t, name))}" for p, t in PRESETS.items())


@dataclass(frozen=True, slots=True)
class RunParameter:
    """One run parameter as every entry point shows it.

    ``kind`` says how a command line reads it: ``path``, ``int``, ``float``, ``bool`` (an on/off flag pair),
    ``choice`` (one of ``choices``), ``gpus`` (comma-separated indices). ``required`` parameters
    have no default (the input).
    """

    name: str
    annotation: Any
    kind: str
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()
    required: bool = False

    @property
    def option(self) -> str:
        """The command-line spelling: ``--chunk-length``."""
        return "--" + self.name.replace("_", "-")


RUN_PARAMETERS: tuple[RunParameter, ...] = (
    RunParameter("input_fasta", Path, "path", "FASTA or FASTA.gz of contigs or reads.", required=True),
    RunParameter("output_dir", Path | None, "path",
                 "Output directory [default: <input name>_virnucpro next to the input]."),
    RunParameter("chunk_length", int, "choice", "Chunk size in bp, 300 or 500 (the classifier must match).",
                 default=_default("chunk_length"), choices=tuple(str(c) for c in CHUNK_LENGTHS)),
    RunParameter("persistent_models", bool, "bool",
                 "Keep DNABERT-S and ESM-2 loaded in each GPU worker across both feature stages (and "
                 "across samples in a nightly batch): less loading, more memory held.",
                 default=_default("persistent_models")),
    RunParameter("dnabert_model", Path | None, "path",
                 "DNABERT-S directory (config.json, weights, tokenizer.json) [default: discovered]."),
    RunParameter("esm_model", Path | None, "path",
                 "ESM-2 fair-esm checkpoint file (esm2_t36_3B_UR50D.pt) [default: discovered]."),
    RunParameter("classifier", Path | None, "path",
                 "Classifier: the original 300_model.pth/500_model.pth or the project's .safetensors "
                 "[default: discovered]."),
    RunParameter("device", DeviceName, "choice", "Where the encoders run: auto, cpu or cuda.",
                 default=_default("device"), choices=tuple(d.value for d in DeviceKind)),
    RunParameter("precision", PrecisionName, "choice",
                 "Encoder precision: auto (fp16 on a GPU with fp32 residual stream and layer norms, an "
                 "fp32 re-run of any non-finite embedding; fp32 on the CPU), fp32 (the original's exact "
                 "arithmetic), bf16, fp16, or fp8 (opt-in: ESM-2's linear layers in FP8 on GPUs of "
                 "compute capability 8.9 or newer, the rest bf16; validate on your weights first).",
                 default=_default("precision"), choices=tuple(p.value for p in Precision)),
    RunParameter("gpus", list[int] | None, "gpus",
                 "GPU indices to use, e.g. 0,1 [default: every visible GPU]."),
    RunParameter("toks_per_batch", int | None, "int",
                 "Tokens per batch [default: sized from free GPU memory; 4096 on the CPU]."),
    RunParameter("shard_frames", int, "int", "Frames per work unit handed to a worker (and per resumable file).",
                 default=_default("shard_frames")),
    RunParameter("resume", bool, "bool",
                 "Reuse finished work of an interrupted run in the same output directory.",
                 default=_default("resume")),
    RunParameter("preset", PresetName, "choice",
                 "Call thresholds: relaxed (screening: more calls), default (the original's calls) or "
                 "conservative (fewer, surer calls); --min-score and --min-virus-fraction override it.",
                 default=_default("preset"), choices=tuple(p.value for p in Preset)),
    RunParameter("min_score", float | None, "float",
                 "Chunk score (0 to 1) a chunk needs to count as virus [default: the preset's: "
                 f"{_preset_values('min_score')}]."),
    RunParameter("min_virus_fraction", float | None, "float",
                 "Fraction of a sequence's scored chunks that must count as virus for a virus call "
                 f"[default: the preset's: {_preset_values('min_virus_fraction')}]."),
    RunParameter("smooth_window", int, "int",
                 "Chunks in the median window that smooths chunk scores before viral regions are "
                 "found (odd; 1 = no smoothing).", default=_default("smooth_window")),
    RunParameter("max_gap", int, "int",
                 "Unscored chunks (no stop-free frame) a viral region may bridge.",
                 default=_default("max_gap")),
    RunParameter("min_region_length", int, "int",
                 "Shortest provirus region reported, in bp (prediction_regions.tsv, provirus.fna).",
                 default=_default("min_region_length")),
    RunParameter("calibration", Path | None, "path",
                 "Calibration file of `virnucpro calibrate`: adds calibrated_virus_score and fdr to "
                 "prediction_sequences.tsv."),
    RunParameter("embedding_cache", Path | None, "path",
                 "Directory of embeddings shared by runs (created if missing): a frame embedded before "
                 "by the same model file (SHA-256), precision, device kind and software version is read, "
                 "not computed, and new embeddings are added [default: no cache]."),
)

_BY_NAME = {p.name: p for p in RUN_PARAMETERS}


def parameter(name: str) -> RunParameter:
    return _BY_NAME[name]


def parse_gpus(value: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """``"0,1"``, ``[0, 1]`` or None (every visible GPU) as a tuple of indices."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [v.strip() for v in value.split(",") if v.strip() != ""]
        try:
            indices = tuple(int(v) for v in parts)
        except ValueError:
            raise ConfigError(
                f"gpus '{value}' is not a comma-separated list of GPU indices; write e.g. 0,1"
            ) from None
    else:
        try:
            indices = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"gpus {value!r} is not a list of GPU indices; pass e.g. [0, 1]") from None
    return indices or None


def _path(value: Any) -> Path | None:
    return Path(value).expanduser() if value not in (None, "") else None


def build_config(values: Mapping[str, Any], origin: ModelOrigin = "parameter") -> RunConfig:
    """A :class:`RunConfig` from raw parameter values (missing ones take their defaults).

    Unknown names are an error, so a misspelt deployment parameter is not silently dropped.
    ``origin`` is how the caller's user gave the values: ``"option"`` (the CLI's ``--dnabert-model``)
    or ``"parameter"`` (a flow's ``dnabert_model``); logs and errors about a model path say so.
    """
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        known = ", ".join(_BY_NAME)
        raise ConfigError(f"unknown run parameter(s) {', '.join(unknown)}; known: {known}")
    get = {p.name: values.get(p.name, p.default) for p in RUN_PARAMETERS}
    if get["input_fasta"] in (None, ""):
        raise ConfigError("input_fasta is required: the FASTA or FASTA.gz file to predict")
    input_fasta = Path(get["input_fasta"]).expanduser()
    try:
        chunk_length = int(get["chunk_length"])
        shard_frames = int(get["shard_frames"])
        toks_per_batch = _optional(get["toks_per_batch"], int)
        min_score = _optional(get["min_score"], float)
        min_virus_fraction = _optional(get["min_virus_fraction"], float)
        smooth_window = int(get["smooth_window"])
        max_gap = int(get["max_gap"])
        min_region_length = int(get["min_region_length"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a numeric run parameter is not a number: {exc}") from None
    return RunConfig(
        input_fasta=input_fasta,
        output_dir=_path(get["output_dir"]) or default_output_dir(input_fasta),
        chunk_length=chunk_length,
        models=ModelPaths(
            dnabert=_path(get["dnabert_model"]),
            esm=_path(get["esm_model"]),
            classifier=_path(get["classifier"]),
            origin=origin,
        ),
        device=DeviceKind.parse(get["device"]),
        precision=Precision.parse(get["precision"]),
        gpus=parse_gpus(get["gpus"]),
        persistent_models=bool(get["persistent_models"]),
        toks_per_batch=toks_per_batch,
        shard_frames=shard_frames,
        resume=bool(get["resume"]),
        preset=str(get["preset"]),
        min_score=min_score,
        min_virus_fraction=min_virus_fraction,
        smooth_window=smooth_window,
        max_gap=max_gap,
        min_region_length=min_region_length,
        calibration=_path(get["calibration"]),
        embedding_cache=_path(get["embedding_cache"]),
    )


def _optional(value: Any, kind: type) -> Any:
    """``kind(value)``, or None for an unset value (None or an empty string)."""
    return kind(value) if value not in (None, "") else None


def parameters_docstring(
    summary: str, names: Sequence[str], extra: Mapping[str, str] | None = None
) -> str:
    """A Google-style docstring (Prefect shows its ``Args`` in the UI) for a flow taking ``names``.

    Help of a run parameter comes from the table; ``extra`` documents a flow's own parameters.
    """
    extra = dict(extra or {})
    lines = [summary.strip(), "", "Args:"]
    for name in names:
        text = extra.pop(name, None) or (_BY_NAME[name].help if name in _BY_NAME else None)
        if text is None:
            raise ValueError(f"parameter {name!r} has no help text: add it to the table or to extra")
        lines.append(f"    {name}: {text}")
    if extra:
        raise ValueError(f"help given for parameters the flow does not take: {sorted(extra)}")
    return "\n".join(lines) + "\n"


def add_argparse_option(parser: argparse.ArgumentParser, name: str, default: Any = None) -> None:
    """The run parameter ``name`` as an argparse option (the flows' ``python flows/*.py`` runners);
    ``default`` overrides the table's default (a night keeps models resident by default)."""
    param = _BY_NAME[name]
    value = param.default if default is None else default
    help_text = f"{name}: {param.help}".replace("%", "%%")
    if param.required:
        parser.add_argument(name, metavar=name.upper(), type=Path, help=help_text)
    elif param.kind == "bool":
        parser.add_argument(param.option, action=argparse.BooleanOptionalAction, default=value,
                            help=help_text + " (default: %(default)s)")
    elif param.kind == "choice":
        parser.add_argument(param.option, choices=list(param.choices), default=str(value),
                            help=help_text + " (default: %(default)s)")
    elif param.kind == "path":
        parser.add_argument(param.option, type=Path, default=None, help=help_text)
    elif param.kind == "int":
        parser.add_argument(param.option, type=int, default=value, help=help_text)
    elif param.kind == "float":
        parser.add_argument(param.option, type=float, default=value, help=help_text)
    else:  # gpus: "0,1", parsed by parse_gpus (one parser, one error message)
        parser.add_argument(param.option, default=None, metavar="0,1", help=help_text)
