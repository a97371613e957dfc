"""The VirNucPro MLP classifier: the model, safe loading of the original pickles, safetensors.

The original ``300_model.pth`` / ``500_model.pth`` are whole pickled modules whose class lives
in ``__main__`` (``torch.save(model)``); the original loads them with ``weights_only=False``,
which runs whatever the file says. Here they go through ``torch.load(weights_only=True)`` with
an allow-list: ``__main__.MLPClassifier`` and the ``torch.nn`` layer classes it is made of are
mapped to inert stand-ins that only receive the pickled attribute dicts; tensors are rebuilt by
torch's own weights-only unpickler. Any other global (``os.system``, ``builtins.eval``, ...) is
refused before it is resolved, so a payload never runs. The weights, BatchNorm statistics
included, are then copied into our own :class:`MLPClassifier`.

The project's format is safetensors with metadata (:func:`save_classifier`);
:func:`load_classifier` tells the two apart by content, not by file name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.domain.atomic import atomic_write_bytes
from virnucpro.errors import ModelLoadError
from virnucpro.models.reference.weights import check_state_keys, read_torch_file

__all__ = [
    "MLPClassifier",
    "load_classifier",
    "save_classifier",
    "classify",
    "CLASSIFY_BATCH_ROWS",
    "SAFETENSORS_FORMAT",
]

CLASSIFY_BATCH_ROWS = 256
SAFETENSORS_FORMAT = "virnucpro-mlp-classifier"
_FORMAT_VERSION = "1"


class MLPClassifier(nn.Module):
    """Linear(d_in, hidden) → BatchNorm1d → ReLU → Dropout(0.5) → Linear(hidden, classes).

    Attribute names are the original's (``hidden_layer``, ``bn1``, ``output_layer``,
    ``dropout``), so state dicts are interchangeable. Built in eval mode. Class 1 = virus.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int = 512, num_class: int = 2, bn_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim, eps=bn_eps)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)
        self.eval()

    @property
    def input_dim(self) -> int:
        return self.hidden_layer.in_features

    @property
    def hidden_dim(self) -> int:
        return self.hidden_layer.out_features

    @property
    def num_class(self) -> int:
        return self.output_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.hidden_layer(x)))
        return self.output_layer(self.dropout(x))


class _PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: keeps the attribute dict, runs nothing."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _PickledMLP(_PickledModule):
    pass


class _PickledLinear(_PickledModule):
    pass


class _PickledBatchNorm(_PickledModule):
    pass


class _PickledOther(_PickledModule):
    pass


_STAND_INS: list[Any] = [
    (_PickledMLP, "__main__.MLPClassifier"),
    (_PickledLinear, "torch.nn.modules.linear.Linear"),
    (_PickledBatchNorm, "torch.nn.modules.batchnorm.BatchNorm1d"),
    (_PickledOther, "torch.nn.modules.dropout.Dropout"),
    (_PickledOther, "torch.nn.modules.activation.ReLU"),
    (_PickledOther, "torch.nn.modules.container.Sequential"),
]


def _layers(module: _PickledModule) -> list[_PickledModule]:
    """Sub-modules in registration order, depth first."""
    found: list[_PickledModule] = []
    for child in getattr(module, "_modules", {}).values():
        if isinstance(child, (_PickledLinear, _PickledBatchNorm)):
            found.append(child)
        elif isinstance(child, _PickledModule):
            found.extend(_layers(child))
    return found


def _tensors(module: _PickledModule, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    values = {**getattr(module, "_parameters", {}), **getattr(module, "_buffers", {})}
    return {n: values[n].detach().clone() for n in names if values.get(n) is not None}


def _state_from_pickle(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], float]:
    if isinstance(obj, Mapping):  # a saved state_dict
        return {k: v for k, v in obj.items()}, 1e-5
    if not isinstance(obj, _PickledModule):
        raise ModelLoadError(
            f"{path}: expected a pickled MLPClassifier or its state dict, found "
            f"{type(obj).__name__}; pass 300_model.pth / 500_model.pth from the VirNucPro "
            "repository"
        )
    layers = _layers(obj)
    kinds = [type(m) for m in layers]
    if kinds != [_PickledLinear, _PickledBatchNorm, _PickledLinear]:
        raise ModelLoadError(
            f"{path}: the pickled model is not Linear → BatchNorm1d → Linear (found "
            f"{[k.__name__.removeprefix('_Pickled') for k in kinds]}); pass the VirNucPro "
            "classifier"
        )
    hidden, bn, output = layers
    state = {
        **{f"hidden_layer.{k}": v for k, v in _tensors(hidden, ("weight", "bias")).items()},
        **{
            f"bn1.{k}": v
            for k, v in _tensors(
                bn, ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            ).items()
        },
        **{f"output_layer.{k}": v for k, v in _tensors(output, ("weight", "bias")).items()},
    }
    return state, float(getattr(bn, "eps", 1e-5))


def _build(path: Path, state: Mapping[str, torch.Tensor], bn_eps: float) -> MLPClassifier:
    weight = state.get("hidden_layer.weight")
    out = state.get("output_layer.weight")
    if weight is None or out is None or weight.ndim != 2 or out.ndim != 2:
        raise ModelLoadError(
            f"{path}: no hidden_layer/output_layer weights found; pass 300_model.pth / "
            "500_model.pth from the VirNucPro repository or a classifier saved by virnucpro"
        )
    model = MLPClassifier(int(weight.shape[1]), int(weight.shape[0]), int(out.shape[0]), bn_eps)
    check_state_keys(model, state, path, "VirNucPro classifier")
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in state.items()})
    return model.eval()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            return {k: handle.get_tensor(k) for k in handle.keys()}, metadata
    except Exception as exc:  # safetensors raises its own error types
        raise ModelLoadError(f"{path}: cannot read these safetensors ({exc})") from exc


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size < (1 << 28) and head[8:9] == b"{"


def load_classifier(path: Path) -> MLPClassifier:
    """Load an original pickled ``.pth`` (safely) or the project's safetensors; eval mode, CPU."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot open the classifier file ({exc})") from exc
    if _is_safetensors(head):
        state, metadata = _read_safetensors(path)
        if metadata.get("format") != SAFETENSORS_FORMAT:
            raise ModelLoadError(
                f"{path}: a safetensors file, but not a VirNucPro classifier (metadata format "
                f"{metadata.get('format')!r}); convert the original .pth with save_classifier"
            )
        return _build(path, state, float(metadata.get("bn_eps", "1e-5")))
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        obj = read_torch_file(path, allowed=_STAND_INS, what="classifier")
        state, eps = _state_from_pickle(path, obj)
        return _build(path, state, eps)
    raise ModelLoadError(
        f"{path}: neither a PyTorch .pth nor a safetensors file; pass 300_model.pth / "
        "500_model.pth from the VirNucPro repository"
    )


def save_classifier(model: MLPClassifier, path: Path) -> None:
    """Write ``model`` as safetensors with its dimensions and a format version in the metadata.

    Written atomically by :func:`~virnucpro.domain.atomic.atomic_write_bytes`, with the umask's
    permissions like every other file (``safetensors.save_file`` makes its files 0600).
    """
    from safetensors.torch import save

    metadata = {
        "format": SAFETENSORS_FORMAT,
        "format_version": _FORMAT_VERSION,
        "input_dim": str(model.input_dim),
        "hidden_dim": str(model.hidden_dim),
        "num_class": str(model.num_class),
        "bn_eps": json.dumps(model.bn1.eps),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=metadata))


def classify(model: MLPClassifier, features: torch.Tensor) -> np.ndarray:
    """Softmax probabilities ``[N, num_class]`` float32 (column 1 = virus), 256 rows per batch.

    Batches of 256 rows in the given order, as the original's DataLoader: the same rows in the
    same order give bit-identical scores.
    """
    if features.ndim != 2 or features.shape[1] != model.input_dim:
        raise ValueError(
            f"features must be [N, {model.input_dim}] for this classifier, got "
            f"{list(features.shape)}; the encoders' dimensions do not match the classifier"
        )
    device = next(model.parameters()).device
    model.eval()
    out = np.empty((features.shape[0], model.num_class), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, features.shape[0], CLASSIFY_BATCH_ROWS):
            batch = features[start : start + CLASSIFY_BATCH_ROWS].to(device, torch.float32)
            probs = F.softmax(model(batch), dim=1)
            out[start : start + batch.shape[0]] = probs.cpu().numpy()
    return out
