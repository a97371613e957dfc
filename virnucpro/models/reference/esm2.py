"""ESM-2: alphabet, named specs, loading a fair-esm checkpoint safely, and our own forward pass.

The forward pass computes fair-esm's ``ESM2`` function (REFERENCE.md §6) with SDPA attention:
token-dropout scaling, padding rows zeroed, pre-LN layers with rotary q/k (fair-esm
``RotaryEmbedding`` semantics), GELU (erf) FFN, final ``emb_layer_norm_after``. Checkpoints are
read with ``torch.load(weights_only=True, mmap=True)``; only ``argparse.Namespace`` is added to
torch's allow-list (the ``cfg`` of fair-esm hub files). The contact head and LM head are not used.

Precision (see :mod:`.weights`): Linear layers, rotary (tables computed in fp32) and attention
in the compute dtype, softmax inside SDPA; residual stream and LayerNorms fp32. In fp32 every
operation is fair-esm's.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import ModelLoadError
from virnucpro.models.reference.weights import (
    assign_state,
    random_state,
    read_torch_file,
    uninitialised_embedding,
)

__all__ = [
    "ProteinAlphabet",
    "Esm2Spec",
    "ESM2_T6_8M_UR50D",
    "ESM2_T12_35M_UR50D",
    "ESM2_T30_150M_UR50D",
    "ESM2_T33_650M_UR50D",
    "ESM2_T36_3B_UR50D",
    "ESM2_T48_15B_UR50D",
    "Esm2Encoder",
    "read_esm2_checkpoint",
    "load_esm2",
    "build_random_esm2",
    "apply_rotary",
    "MASK_RATIO_TRAIN",
]

MASK_RATIO_TRAIN = 0.15 * 0.8
"""fair-esm's ``mask_ratio_train``: token dropout rescales embeddings by ``(1 − this) / (1 − the
observed mask ratio)``."""
_PREFIX = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
_IGNORED_PREFIXES = ("lm_head.", "contact_head.")
_INV_FREQ = ".self_attn.rot_emb.inv_freq"


class ProteinAlphabet:
    """The ESM-1b alphabet fair-esm uses for ESM-2 (33 tokens), without importing fair-esm.

    ``encode(protein)`` is ``<cls> protein <eos>``; one id per residue character, unknown
    characters map to ``<unk>`` (translated proteins only hold the 20 amino acids).
    """

    tokens: tuple[str, ...] = (
        "<cls>", "<pad>", "<eos>", "<unk>",
        "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M",
        "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
        "<null_1>", "<mask>",
    )  # fmt: skip

    def __init__(self) -> None:
        self._index = {tok: i for i, tok in enumerate(self.tokens)}
        self.cls_idx = self._index["<cls>"]
        self.padding_idx = self._index["<pad>"]
        self.eos_idx = self._index["<eos>"]
        self.unk_idx = self._index["<unk>"]
        self.mask_idx = self._index["<mask>"]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, protein: str) -> list[int]:
        """``<cls>`` + one id per residue + ``<eos>``."""
        index, unk = self._index, self.unk_idx
        return [self.cls_idx, *(index.get(c, unk) for c in protein), self.eos_idx]


@dataclass(frozen=True, slots=True)
class Esm2Spec:
    """Shape of an ESM-2 model, named after its checkpoint."""

    name: str
    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.attention_heads or (self.embed_dim // self.attention_heads) % 2:
            raise ModelLoadError(
                f"ESM-2 spec {self.name}: embed_dim {self.embed_dim} must split into "
                f"{self.attention_heads} heads of even size"
            )


ESM2_T6_8M_UR50D = Esm2Spec("esm2_t6_8M_UR50D", 6, 320, 20)
ESM2_T12_35M_UR50D = Esm2Spec("esm2_t12_35M_UR50D", 12, 480, 20)
ESM2_T30_150M_UR50D = Esm2Spec("esm2_t30_150M_UR50D", 30, 640, 20)
ESM2_T33_650M_UR50D = Esm2Spec("esm2_t33_650M_UR50D", 33, 1280, 20)
ESM2_T36_3B_UR50D = Esm2Spec("esm2_t36_3B_UR50D", 36, 2560, 40)
ESM2_T48_15B_UR50D = Esm2Spec("esm2_t48_15B_UR50D", 48, 5120, 40)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _RotaryEmbedding(nn.Module):
    """fair-esm ``RotaryEmbedding``: ``inv_freq`` is a checkpoint buffer; tables built in fp32."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        layout_only = torch.empty(0).device.type == "meta"  # built to receive a checkpoint's tensors
        # (arithmetic on meta tensors imports torch._dynamo: ~1.3 s of a CPU worker's start)
        inv_freq = torch.empty(head_dim // 2) if layout_only else self.default_inv_freq(head_dim)
        self.register_buffer("inv_freq", inv_freq)

    @staticmethod
    def default_inv_freq(head_dim: int) -> torch.Tensor:
        return 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def tables(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin`` as ``[T, 1, head_dim]`` (broadcast over ``[B, T, heads, head_dim]``).

        Computed in fp32 (angles up to ~1000 rad need it), then cast to the compute dtype.
        """
        t = torch.arange(length, device=device).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: ``x·cos + rotate_half(x)·sin`` (fair-esm's
    ``apply_rotary_pos_emb``; ``cos``/``sin`` from the rotary tables)."""
    return x * cos + _rotate_half(x) * sin


class _SelfAttention(nn.Module):
    """fair-esm ``MultiheadAttention`` for ESM-2: q scaled by head_dim^-0.5, then rotary on q, k.

    Rotary runs on the contiguous ``[B, T, heads, head_dim]`` layout in the compute dtype.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.rot_emb = _RotaryEmbedding(self.head_dim)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        h = x.to(self.q_proj.weight.dtype)
        batch, length, _ = h.shape
        shape = (batch, length, self.heads, self.head_dim)
        q = apply_rotary((self.q_proj(h) * self.scaling).view(shape), cos, sin)
        k = apply_rotary(self.k_proj(h).view(shape), cos, sin)
        v = self.v_proj(h).view(shape)
        context = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask, scale=1.0
        )
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, -1))


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        # fp32 residual + low-precision branch: type promotion adds in fp32, in one kernel
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_mask, cos, sin)
        h = self.fc1(self.final_layer_norm(x).to(self.fc1.weight.dtype))
        return x + self.fc2(F.gelu(h))


class Esm2Encoder(nn.Module):
    """ESM-2 encoder: ``forward(tokens [B, T])`` -> last-layer representation ``[B, T, D]``, fp32.

    Equals fair-esm ``ESM2(tokens, repr_layers=[num_layers])["representations"][num_layers]``
    (after ``emb_layer_norm_after``). Padded positions hold values; callers mean over residues.
    """

    def __init__(self, spec: Esm2Spec) -> None:
        super().__init__()
        self.spec = spec
        self.alphabet = ProteinAlphabet()
        self.embed_tokens = uninitialised_embedding(
            len(self.alphabet), spec.embed_dim, padding_idx=self.alphabet.padding_idx
        )
        self.layers = nn.ModuleList(
            _Layer(spec.embed_dim, spec.attention_heads) for _ in range(spec.num_layers)
        )
        self.emb_layer_norm_after = nn.LayerNorm(spec.embed_dim)

    @property
    def dim(self) -> int:
        """Width of the representation (2560 for esm2_t36_3B_UR50D)."""
        return self.spec.embed_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens.eq(self.alphabet.padding_idx)
        x = self.embed_tokens(tokens).float()
        if self.spec.token_dropout:
            masked = tokens.eq(self.alphabet.mask_idx)
            x = x.masked_fill(masked.unsqueeze(-1), 0.0)
            observed = masked.sum(-1).to(x.dtype) / (~padding).sum(-1)
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
        x = x * (1 - padding.unsqueeze(-1).type_as(x))
        key_mask = (~padding)[:, None, None, :] if bool(padding.any()) else None
        cos, sin = self.layers[0].self_attn.rot_emb.tables(
            tokens.shape[1], tokens.device, self.layers[0].fc1.weight.dtype
        )
        for layer in self.layers:
            x = layer(x, key_mask, cos, sin)
        return self.emb_layer_norm_after(x)


def _cfg_value(cfg: Any, name: str) -> Any:
    return cfg.get(name) if isinstance(cfg, Mapping) else getattr(cfg, name, None)


def _spec_from_checkpoint(path: Path, data: Any) -> Esm2Spec:
    if not isinstance(data, Mapping) or "model" not in data:
        raise ModelLoadError(
            f"{path}: not a fair-esm checkpoint (expected a dict with 'model' and 'cfg'); "
            "use esm2_t36_3B_UR50D.pt as downloaded by fair-esm"
        )
    if "cfg" not in data:
        kind = "an ESM-1/ESM-1b checkpoint (old 'args' format)" if "args" in data else "not ESM-2"
        raise ModelLoadError(
            f"{path}: this is {kind}; VirNucPro needs ESM-2 (esm2_t36_3B_UR50D.pt)"
        )
    cfg = data["cfg"]["model"] if isinstance(data["cfg"], Mapping) else None
    values = {
        n: _cfg_value(cfg, n)
        for n in ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads")
    }
    if cfg is None or any(v is None for v in values.values()):
        raise ModelLoadError(
            f"{path}: the checkpoint's cfg['model'] lacks encoder_layers / encoder_embed_dim / "
            "encoder_attention_heads; use an unmodified fair-esm ESM-2 checkpoint"
        )
    token_dropout = _cfg_value(cfg, "token_dropout")
    return Esm2Spec(
        name=path.stem,
        num_layers=int(values["encoder_layers"]),
        embed_dim=int(values["encoder_embed_dim"]),
        attention_heads=int(values["encoder_attention_heads"]),
        token_dropout=True if token_dropout is None else bool(token_dropout),
    )


def read_esm2_checkpoint(path: Path) -> tuple[Esm2Spec, dict[str, torch.Tensor]]:
    """The spec and encoder state (our key names) of a fair-esm ESM-2 checkpoint file.

    Keys lose fair-esm's ``encoder.`` / ``encoder.sentence_encoder.`` prefix; ``lm_head.*`` and
    ``contact_head.*`` are dropped; a missing rotary ``inv_freq`` gets fair-esm's default value
    (a stored one is used as stored, as fair-esm does). Tensors stay memory-mapped on the CPU.
    """
    path = Path(path)
    data = read_torch_file(path, allowed=[argparse.Namespace], what="ESM-2 checkpoint")
    spec = _spec_from_checkpoint(path, data)
    state = {
        _PREFIX.sub("", k): v
        for k, v in data["model"].items()
        if not _PREFIX.sub("", k).startswith(_IGNORED_PREFIXES)
    }
    head_dim = spec.embed_dim // spec.attention_heads
    for i in range(spec.num_layers):
        state.setdefault(f"layers.{i}{_INV_FREQ}", _RotaryEmbedding.default_inv_freq(head_dim))
    return spec, state


def load_esm2(path: Path, device: torch.device, dtype: torch.dtype) -> Esm2Encoder:
    """Load an ESM-2 encoder from a fair-esm checkpoint (``esm2_t36_3B_UR50D.pt``).

    The file is memory-mapped; each tensor is copied once to ``device`` in its target dtype
    (Linear weights ``dtype``, the rest fp32). Eval mode, gradients off. The contact-regression
    file next to it is not needed.
    """
    spec, state = read_esm2_checkpoint(Path(path))
    with torch.device("meta"):
        model = Esm2Encoder(spec)
    assign_state(model, state, torch.device(device), dtype, Path(path), "ESM-2")
    return model


def build_random_esm2(
    spec: Esm2Spec, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> Esm2Encoder:
    """An ESM-2 of ``spec``'s shape with deterministic random weights, generated on ``device``.

    For benchmarks: ``build_random_esm2(ESM2_T36_3B_UR50D, torch.device("cuda"), torch.bfloat16)``
    builds the full 3B model on the GPU in seconds (no checkpoint, no CPU copy).
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = Esm2Encoder(spec)
    state = random_state(model, seed, device)
    head_dim = spec.embed_dim // spec.attention_heads
    for name in state:
        if name.endswith(_INV_FREQ):
            state[name] = _RotaryEmbedding.default_inv_freq(head_dim).to(device)
    assign_state(model, state, device, dtype, Path(f"<random {spec.name}>"), "ESM-2")
    return model
