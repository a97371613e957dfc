"""How checkpoint tensors become module weights: key checks, device and dtype placement.

Precision rule shared by both encoders: the weights of ``nn.Linear`` layers are cast to the
compute dtype (fp32, bf16 or fp16: plain casting, no autocast); LayerNorm and embedding
parameters and all buffers stay fp32, and the modules keep their residual stream in fp32, so
LayerNorm, residual sums and the final mean are fp32 whatever the compute dtype. DNABERT-S also
keeps its short attention in fp32; ESM-2 runs rotary and attention in the compute dtype. In fp32
every operation is the plain fp32 one.

Modules are built on the ``meta`` device and receive their tensors with
``load_state_dict(assign=True)``: a 3B-parameter model is never initialised twice.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from virnucpro.config import Precision
from virnucpro.models.reference.device_copy import copy_to_device
from virnucpro.errors import ModelLoadError

__all__ = [
    "torch_dtype",
    "fp32_parameter_names",
    "check_state_keys",
    "assign_state",
    "random_state",
    "read_torch_file",
    "uninitialised_embedding",
]

_DTYPES = {
    Precision.FP32: torch.float32,
    Precision.BF16: torch.bfloat16,
    Precision.FP16: torch.float16,
    Precision.FP8: torch.bfloat16,  # weights load in bf16; ESM-2's fast path quantises its GEMMs to FP8
}

_SHOWN_KEYS = 20
_FORBIDDEN = re.compile(r"GLOBAL ([\w.]+)")


def torch_dtype(precision: Precision) -> torch.dtype:
    """The torch dtype of the encoders' matrix multiplications for ``precision``."""
    return _DTYPES[precision]


def fp32_parameter_names(module: nn.Module) -> set[str]:
    """State-dict names that stay fp32: all but the weights and biases of Linear layers."""
    low_precision = {
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        if isinstance(sub, nn.Linear)
        for name, _ in sub.named_parameters(recurse=False)
    }
    return set(module.state_dict(keep_vars=True)) - low_precision


def _listing(keys: Iterable[str]) -> str:
    ordered = sorted(keys)
    shown = ", ".join(ordered[:_SHOWN_KEYS])
    more = len(ordered) - _SHOWN_KEYS
    return shown + (f", ... ({more} more)" if more > 0 else "")


def check_state_keys(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: Path, what: str
) -> None:
    """Raise :class:`ModelLoadError` unless ``state`` has exactly the module's keys and shapes.

    The message names every missing and unexpected key (the first 20 of each, then a count) and
    every shape mismatch, so a wrong or truncated checkpoint is recognisable at once.
    """
    expected = module.state_dict(keep_vars=True)
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    wrong_shape = [
        f"{k} is {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong_shape:
        problems.append("shape mismatches: " + "; ".join(sorted(wrong_shape)[:_SHOWN_KEYS]))
    if problems:
        raise ModelLoadError(
            f"{source}: not a {what} checkpoint that matches its configuration ("
            + "; ".join(problems)
            + f"). Check that the file is a complete {what} checkpoint and that its "
            "configuration belongs to it."
        )


def assign_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    source: Path,
    what: str,
) -> None:
    """Check ``state`` against ``module`` (built on ``meta``); then move it in, cast by the rule."""
    check_state_keys(module, state, source, what)
    keep_fp32 = fp32_parameter_names(module)
    placed = {}
    # the file's bytes to the device (several copies at once on CUDA), then cast there; a group at
    # a time, so a cast to a wider dtype holds at most one group twice
    for group in _groups(list(state), state, _CAST_GROUP_BYTES):
        moved = copy_to_device([state[name] for name in group], torch.device(device))
        for name, tensor in zip(group, moved):
            target = torch.float32 if name in keep_fp32 else dtype
            if not tensor.is_floating_point():
                target = tensor.dtype
            placed[name] = tensor.to(dtype=target)
        del moved
    module.load_state_dict(placed, strict=True, assign=True)
    module.eval()
    module.requires_grad_(False)


_CAST_GROUP_BYTES = 1 << 30


def _groups(names: list[str], state: Mapping[str, torch.Tensor], limit: int) -> Iterable[list[str]]:
    """``names`` in order, cut into runs of at most ``limit`` bytes (a larger tensor alone)."""
    group: list[str] = []
    size = 0
    for name in names:
        nbytes = state[name].numel() * state[name].element_size()
        if group and size + nbytes > limit:
            yield group
            group, size = [], 0
        group.append(name)
        size += nbytes
    if group:
        yield group


def random_state(
    module: nn.Module, seed: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Deterministic random fp32 weights for ``module``'s state-dict layout.

    Linear weights N(0, 1/fan_in), Linear biases 0.1·N, LayerNorm weights 1 + 0.1·N and biases
    0.1·N, embeddings N(0, 1): large enough that every component changes the output. The same
    seed on the same device gives the same tensors.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    norms = {
        f"{p}.{n}" if p else n
        for p, sub in module.named_modules()
        if isinstance(sub, nn.LayerNorm)
        for n, _ in sub.named_parameters(recurse=False)
    }
    state: dict[str, torch.Tensor] = {}
    for name, ref in module.state_dict(keep_vars=True).items():
        shape = tuple(ref.shape)
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        if name in norms:
            state[name] = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        elif name.endswith("bias"):
            state[name] = 0.1 * noise
        elif len(shape) == 2 and "embed" not in name:
            state[name] = noise * shape[1] ** -0.5
        else:
            state[name] = noise
    return state


def uninitialised_embedding(num: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """An ``nn.Embedding`` whose weight is left uninitialised (it is assigned from a checkpoint).

    Built on the ``meta`` device, a plain ``nn.Embedding`` initialises its weight with
    ``normal_``, whose meta implementation imports ``torch._dynamo``: 1.3-1.5 s of every worker's
    start on a CPU, for a tensor that is replaced at once.
    """
    return nn.Embedding(num, dim, padding_idx=padding_idx, _weight=torch.empty(num, dim))


def _reason(exc: Exception) -> str:
    """The informative part of torch's weights-only error text."""
    text = str(exc)
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n\n")[0].strip()
    return detail or text.splitlines()[0]


def read_torch_file(path: Path, allowed: Sequence[Any] = (), what: str = "model") -> Any:
    """``torch.load`` with ``weights_only=True`` (never ``False``), memory-mapped when possible.

    ``allowed`` extends torch's allow-list for this call only (classes, or
    ``(stand_in, "module.Name")`` pairs that map a pickled global to a harmless stand-in). A
    pickle that references any other global is refused before that global is touched, with a
    :class:`ModelLoadError` naming it.
    """
    mmap = zipfile.is_zipfile(path)  # torch's zip format; the legacy format cannot be mmapped
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = _FORBIDDEN.search(str(exc))
        if found is None:
            raise ModelLoadError(
                f"{path}: cannot read this {what} file ({_reason(exc)}). The file "
                "may be truncated or not a PyTorch checkpoint; download or copy it again."
            ) from None
        raise ModelLoadError(
            f"{path}: refused to load this {what} file: it references the global "
            f"'{found.group(1)}', which is not on the allow-list of tensor and model-structure "
            "types, and loading it could run code from the file. Use the original, unmodified "
            "model file (or the project's safetensors format); never load untrusted pickles."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: cannot read this {what} file with torch.load ({exc}). The file may be "
            "truncated or not a PyTorch checkpoint; download or copy it again."
        ) from exc
