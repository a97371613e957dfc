"""Where the three model files are: explicit option → environment → the original's caches.

Order for each model (DESIGN.md §5):

1. the explicit option (``--dnabert-model``, ``--esm-model``, ``--classifier``): must be valid;
2. ``VIRNUCPRO_DNABERT_MODEL`` / ``VIRNUCPRO_ESM_MODEL`` / ``VIRNUCPRO_CLASSIFIER`` (must be
   valid when set), then ``VIRNUCPRO_MODELS_DIR``: a directory holding ``dnabert_s/``,
   ``esm2_t36_3B_UR50D.pt`` and ``{300,500}_model.pth`` (or ``.safetensors``);
3. the caches the original used: the Hugging Face cache snapshot of ``zhihan1996/DNABERT-S``
   and the torch hub checkpoint ``esm2_t36_3B_UR50D.pt`` (there is no cache for classifiers);
4. otherwise one :class:`ModelNotFoundError` naming each missing file, every place looked, and
   how to install it offline.

A location inside a directory made by :func:`virnucpro.models.demo.make_demo_models` has source
``"demo"`` whatever way it was given, so random demo weights are never mistaken for real ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from virnucpro.config import ModelOrigin
from virnucpro.domain.checksums import sha256_file_unchanged
from virnucpro.errors import ModelNotFoundError
from virnucpro.models.demo_marker import is_demo_model
from virnucpro.models.files import WEIGHT_FILES
from virnucpro.models.reference.dnabert_tokenizer import tokenizer_path

__all__ = [
    "ModelKind",
    "Source",
    "ModelLocation",
    "ResolvedModels",
    "ModelSearch",
    "find_models",
    "resolve_models",
    "ENV_DNABERT",
    "ENV_ESM",
    "ENV_CLASSIFIER",
    "ENV_MODELS_DIR",
    "HF_REPO_DIR",
    "ESM_CHECKPOINT",
    "MODELS_DIR_DNABERT",
]

logger = logging.getLogger(__name__)

ModelKind = Literal["dnabert", "esm", "classifier"]
Source = Literal["option", "environment", "cache", "demo"]

ENV_DNABERT = "VIRNUCPRO_DNABERT_MODEL"
ENV_ESM = "VIRNUCPRO_ESM_MODEL"
ENV_CLASSIFIER = "VIRNUCPRO_CLASSIFIER"
ENV_MODELS_DIR = "VIRNUCPRO_MODELS_DIR"
HF_REPO_DIR = "models--zhihan1996--DNABERT-S"
ESM_CHECKPOINT = "esm2_t36_3B_UR50D.pt"
MODELS_DIR_DNABERT = "dnabert_s"
_OPTION = {"dnabert": "--dnabert-model", "esm": "--esm-model", "classifier": "--classifier"}
_PARAMETER = {"dnabert": "dnabert_model", "esm": "esm_model", "classifier": "classifier"}
_ENV = {"dnabert": ENV_DNABERT, "esm": ENV_ESM, "classifier": ENV_CLASSIFIER}


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """One model's location. ``path``: a DNABERT-S directory, or the ESM-2 / classifier file."""

    kind: ModelKind
    path: Path
    source: Source
    found_via: str  # e.g. "option --esm-model", "parameter esm_model", "$VIRNUCPRO_MODELS_DIR"

    @property
    def weights_file(self) -> Path:
        """The file holding the weights (inside the directory for DNABERT-S)."""
        if self.kind == "dnabert":
            return next(self.path / n for n in WEIGHT_FILES if (self.path / n).is_file())
        return self.path

    @property
    def tokenizer_file(self) -> Path | None:
        """DNABERT-S only: the ``tokenizer.json`` used (may be the packaged copy)."""
        return tokenizer_path(self.path)[0] if self.kind == "dnabert" else None

    def sha256(self) -> str:
        """SHA-256 of :attr:`weights_file` (computed on request: the ESM-2 file is 5.7 GB; once
        per process while the file is unchanged, see :func:`sha256_file_unchanged`)."""
        return sha256_file_unchanged(self.weights_file)


@dataclass(frozen=True, slots=True)
class ResolvedModels:
    """The three models of one run."""

    dnabert: ModelLocation
    esm: ModelLocation
    classifier: ModelLocation

    def __iter__(self) -> Iterator[ModelLocation]:
        return iter((self.dnabert, self.esm, self.classifier))


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def _cache_root(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else _home(environ) / ".cache"


def _hf_hub_cache(environ: Mapping[str, str]) -> Path:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return Path(environ[name])
    home = environ.get("HF_HOME")
    return (Path(home) if home else _cache_root(environ) / "huggingface") / "hub"


def _torch_home(environ: Mapping[str, str]) -> Path:
    home = environ.get("TORCH_HOME")
    return Path(home) if home else _cache_root(environ) / "torch"


def _valid_dnabert_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / n).is_file() for n in WEIGHT_FILES)


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` names, else the newest valid one, of a HF cache repo dir."""
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text().strip()
        if _valid_dnabert_dir(named):
            return named
    if not snapshots.is_dir():
        return None
    valid = [p for p in snapshots.iterdir() if _valid_dnabert_dir(p)]
    return max(valid, key=lambda p: p.stat().st_mtime) if valid else None


def _as_dnabert_dir(path: Path) -> Path | None:
    """``path`` itself when valid, or the snapshot of a HF cache repo directory given as a whole."""
    if _valid_dnabert_dir(path):
        return path
    if (path / "snapshots").is_dir():
        return _snapshot(path)
    return None


def _valid(kind: ModelKind, path: Path) -> Path | None:
    if kind == "dnabert":
        return _as_dnabert_dir(path)
    return path if path.is_file() else None


def _classifier_names(chunk_length: int) -> tuple[str, ...]:
    return (f"{chunk_length}_model.pth", f"{chunk_length}_model.safetensors")


def _expected(kind: ModelKind, chunk_length: int) -> str:
    if kind == "dnabert":
        return "a DNABERT-S directory (config.json + pytorch_model.bin or model.safetensors)"
    if kind == "esm":
        return ESM_CHECKPOINT
    return " or ".join(_classifier_names(chunk_length))


def _given_via(kind: ModelKind, origin: ModelOrigin) -> str:
    """How the entry point names an explicit path: ``option --esm-model``, ``parameter esm_model``."""
    return f"parameter {_PARAMETER[kind]}" if origin == "parameter" else f"option {_OPTION[kind]}"


def _give(kind: ModelKind, origin: ModelOrigin, value: str) -> str:
    if origin == "parameter":
        return f"set the parameter {_PARAMETER[kind]}={value}"
    return f"pass {_OPTION[kind]} {value}"


def _advice(kind: ModelKind, chunk_length: int, environ: Mapping[str, str], origin: ModelOrigin) -> str:
    if kind == "dnabert":
        target = _hf_hub_cache(environ) / HF_REPO_DIR / "snapshots" / "<revision>"
        return (
            "copy the DNABERT-S snapshot directory (config.json, pytorch_model.bin, "
            f"tokenizer.json) to {target}/ (with refs/main naming the revision), or to "
            f"$VIRNUCPRO_MODELS_DIR/{MODELS_DIR_DNABERT}/, or {_give(kind, origin, 'DIR')}"
        )
    if kind == "esm":
        target = _torch_home(environ) / "hub" / "checkpoints"
        return (
            f"place {ESM_CHECKPOINT} (5.7 GB) in {target}/ or in $VIRNUCPRO_MODELS_DIR/, "
            f"or {_give(kind, origin, 'FILE')}"
        )
    return (
        f"{_give(kind, origin, f'{chunk_length}_model.pth')} from the VirNucPro repository, or "
        "place it in $VIRNUCPRO_MODELS_DIR/"
    )


def _invalid_given(kind: ModelKind, path: Path, via: str, chunk_length: int) -> str:
    what = _expected(kind, chunk_length)
    state = "does not exist" if not path.exists() else f"is not {what}"
    return f"{via} {path} {state}; give {what}"


def _find(
    kind: ModelKind,
    option: Path | None,
    chunk_length: int,
    environ: Mapping[str, str],
    origin: ModelOrigin,
) -> tuple[ModelLocation | None, list[str], str | None]:
    """The location, the places looked, and an error for an invalid explicit/env path."""
    looked: list[str] = []
    if option is not None:
        via = _given_via(kind, origin)
        found = _valid(kind, Path(option).expanduser())
        if found is None:
            looked.append(f"{Path(option)} ({via})")
            return None, looked, _invalid_given(kind, Path(option), via, chunk_length)
        return ModelLocation(kind, found, "option", via), looked, None
    env_value = environ.get(_ENV[kind])
    if env_value:
        path = Path(env_value).expanduser()
        found = _valid(kind, path)
        if found is None:
            looked.append(f"{path} (${_ENV[kind]})")
            return None, looked, _invalid_given(kind, path, f"${_ENV[kind]}", chunk_length)
        return ModelLocation(kind, found, "environment", f"${_ENV[kind]}"), looked, None
    looked.append(f"${_ENV[kind]} (not set)")
    models_dir = environ.get(ENV_MODELS_DIR)
    if models_dir:
        root = Path(models_dir).expanduser()
        names = {
            "dnabert": (MODELS_DIR_DNABERT,),
            "esm": (ESM_CHECKPOINT,),
            "classifier": _classifier_names(chunk_length),
        }[kind]
        for name in names:
            candidate = root / name
            looked.append(f"{candidate} (${ENV_MODELS_DIR})")
            found = _valid(kind, candidate)
            if found is not None:
                return ModelLocation(kind, found, "environment", f"${ENV_MODELS_DIR}"), looked, None
    else:
        looked.append(f"${ENV_MODELS_DIR} (not set)")
    if kind == "dnabert":
        repo = _hf_hub_cache(environ) / HF_REPO_DIR
        looked.append(f"{repo}/snapshots/<refs/main or newest>/ (Hugging Face cache)")
        found = _snapshot(repo)
        if found is not None:
            return ModelLocation(kind, found, "cache", "Hugging Face cache"), looked, None
    elif kind == "esm":
        candidate = _torch_home(environ) / "hub" / "checkpoints" / ESM_CHECKPOINT
        looked.append(f"{candidate} (torch hub cache)")
        if candidate.is_file():
            return ModelLocation(kind, candidate, "cache", "torch hub cache"), looked, None
    return None, looked, None


def _mark_demo(location: ModelLocation) -> ModelLocation:
    if location.source != "demo" and is_demo_model(location.path):
        logger.warning(
            "%s is a VirNucPro DEMO model with random weights: its calls are meaningless",
            location.path,
        )
        return ModelLocation(location.kind, location.path, "demo", location.found_via)
    return location


@dataclass(frozen=True, slots=True)
class ModelSearch:
    """The search for one model: where it was found, or every place looked and what to do."""

    kind: ModelKind
    location: ModelLocation | None
    looked: tuple[str, ...]
    problem: str = ""  # empty when found
    hint: str = ""  # how to install it offline (for a model not found anywhere)

    @property
    def found(self) -> bool:
        return self.location is not None


def find_models(
    dnabert: Path | None,
    esm: Path | None,
    classifier: Path | None,
    chunk_length: int,
    environ: Mapping[str, str] = os.environ,
    origin: ModelOrigin = "option",
) -> tuple[ModelSearch, ...]:
    """Search for each of the three models (see the module docstring); raises nothing.

    ``origin`` says how the entry point names explicit paths (the CLI's options, a flow's
    parameters), for ``found_via`` and the messages.
    """
    searches: list[ModelSearch] = []
    given: dict[ModelKind, Path | None] = {"dnabert": dnabert, "esm": esm, "classifier": classifier}
    for kind, option in given.items():
        location, looked, invalid = _find(kind, option, chunk_length, environ, origin)
        if location is not None:
            if kind == "dnabert" and tokenizer_path(location.path)[1]:
                logger.info(
                    "%s has no tokenizer.json; the packaged copy will be used", location.path
                )
            searches.append(ModelSearch(kind, _mark_demo(location), tuple(looked)))
        elif invalid is not None:
            searches.append(ModelSearch(kind, None, tuple(looked), f"{invalid}."))
        else:
            searches.append(ModelSearch(
                kind, None, tuple(looked), f"{_expected(kind, chunk_length)} was not found.",
                f"To install offline: {_advice(kind, chunk_length, environ, origin)}.",
            ))
    return tuple(searches)


def resolve_models(
    dnabert: Path | None,
    esm: Path | None,
    classifier: Path | None,
    chunk_length: int,
    environ: Mapping[str, str] = os.environ,
    origin: ModelOrigin = "option",
) -> ResolvedModels:
    """Find the three models (see :func:`find_models`); one error lists everything missing."""
    searches = find_models(dnabert, esm, classifier, chunk_length, environ, origin)
    problems: list[str] = []
    for search in searches:
        if search.found:
            continue
        if not search.hint:  # an explicit or $VIRNUCPRO_* path that is not a model
            problems.append(f"{search.kind}: {search.problem}")
            continue
        where = "\n".join(f"    - {place}" for place in search.looked)
        problems.append(f"{search.kind}: {search.problem} Looked in:\n{where}\n  {search.hint}")
    if problems:
        raise ModelNotFoundError("model files are missing:\n" + "\n".join(problems))
    found = {s.kind: s.location for s in searches}
    return ResolvedModels(found["dnabert"], found["esm"], found["classifier"])  # type: ignore[arg-type]
