"""DNABERT-S (MosaicBERT) forward pass, native: no remote code, independent of transformers.

REFERENCE.md §6. Word + token-type(0) embeddings and LayerNorm, no position embeddings; ALiBi
attention bias −slope·|i−j| per head (slopes as the original ``rebuild_alibi_tensor`` builds
them, the non-power-of-two rule and head order included) plus −10000 on padded keys; post-LN
layers with a fused ``Wqkv`` and a GEGLU MLP. The module names equal the checkpoint's
``BertModel`` keys, so a state dict maps one to one (``bert.`` prefix, ``cls.`` MLM head and
``pooler.`` are handled by :func:`normalize_dnabert_state`).

Precision (see :mod:`.weights`): Linear layers run in the compute dtype; the residual stream,
the LayerNorms and the attention itself (softmax included) are fp32, so bf16 and fp16 never meet
the fp32 ALiBi bias that crashes the original, and cost little at DNABERT's ~110 tokens per
sequence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import ModelLoadError
from virnucpro.models.files import WEIGHT_FILES
from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer
from virnucpro.models.reference.weights import (
    assign_state,
    random_state,
    read_torch_file,
    uninitialised_embedding,
)

__all__ = [
    "DnabertConfig",
    "DnabertS",
    "alibi_slopes",
    "normalize_dnabert_state",
    "read_dnabert_weights",
    "load_dnabert",
    "build_random_dnabert",
    "WEIGHT_FILES",
]

_PAD_BIAS = -10000.0
_IGNORED_PREFIXES = ("cls.", "pooler.")
_IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


@dataclass(frozen=True, slots=True)
class DnabertConfig:
    """The ``config.json`` fields the forward pass uses (defaults: the real DNABERT-S)."""

    vocab_size: int = 4096
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2
    alibi_starting_size: int = 512

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ModelLoadError(
                f"DNABERT-S config: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}; the config.json is damaged"
            )

    @classmethod
    def from_json(cls, path: Path) -> "DnabertConfig":
        """Read ``config.json``; fields it lacks take the DNABERT-S defaults."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{path}: cannot read the DNABERT-S config ({exc}); copy config.json from the "
                "DNABERT-S snapshot again"
            ) from exc
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_json_dict(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi slopes, head 0 first, exactly as MosaicBERT builds them.

    For a power of two n: 2^(−8i/n), i = 1..n. Otherwise the slopes of the closest lower power
    of two m, then every other slope of 2m, the first n − m of them (12 heads: 2^-1 … 2^-8, then
    2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5), not sorted.
    """
    if n_heads < 1:
        raise ValueError("n_heads must be at least 1")

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    m = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(m) + alibi_slopes(2 * m)[0::2][: n_heads - m]


class _Embeddings(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.word_embeddings = uninitialised_embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = uninitialised_embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        words = self.word_embeddings(input_ids).float()
        token_type = self.token_type_embeddings.weight[0].float()
        return self.LayerNorm(words + token_type)


class _SelfAttention(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        qkv = self.Wqkv(x.to(self.Wqkv.weight.dtype)).float()
        qkv = qkv.view(batch, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return context.transpose(1, 2).reshape(batch, length, hidden)


class _SelfOutput(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(context.to(self.dense.weight.dtype)) + residual)


class _Attention(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _SelfOutput(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _GatedMlp(nn.Module):
    """GEGLU: ``gelu(h[:, :I]) * h[:, I:]`` of ``gated_layers``; ``wo``; residual; LayerNorm."""

    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.intermediate = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gated_layers(x.to(self.gated_layers.weight.dtype))
        h = F.gelu(h[..., : self.intermediate]) * h[..., self.intermediate :]
        return self.layernorm(self.wo(h) + x)  # promotes to fp32


class _Layer(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.mlp = _GatedMlp(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, bias))


class _Encoder(nn.Module):
    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class DnabertS(nn.Module):
    """DNABERT-S encoder: ``forward(input_ids, attention_mask)`` -> last hidden state, fp32.

    Padded rows of the output are zero, as in the original. The output for a sequence does not
    depend on what else is in the batch (up to float rounding).
    """

    def __init__(self, config: DnabertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.register_buffer(
            "slopes",
            torch.tensor(alibi_slopes(config.num_attention_heads), dtype=torch.float32),
            persistent=False,
        )

    @property
    def dim(self) -> int:
        """Width of the hidden state (768 for the real DNABERT-S)."""
        return self.config.hidden_size

    def attention_bias(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """ALiBi plus padding bias, fp32, ``[B, heads, T, T]`` (built as the original builds it)."""
        length = attention_mask.shape[1]
        position = torch.arange(length, device=attention_mask.device)
        distance = (position[None, :] - position[:, None]).abs()
        alibi = self.slopes[:, None, None] * -distance  # [heads, T, T]
        pad = (1.0 - attention_mask.to(torch.float32)) * _PAD_BIAS  # [B, T]
        return pad[:, None, None, :] + alibi[None]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.to(torch.bool)
        bias = self.attention_bias(attention_mask)
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x.masked_fill(~keep[..., None], 0.0)


def normalize_dnabert_state(
    state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map a ``BertModel`` or ``BertForMaskedLM`` state dict onto :class:`DnabertS` keys.

    Strips a ``bert.`` prefix (present when every encoder key has it), drops the ``cls.`` MLM
    head, the ``pooler.`` and the non-persistent id buffers. Everything else is kept, so unknown
    keys show up as unexpected in the key check.
    """
    prefixed = any(k.startswith("bert.") for k in state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key[len("bert.") :] if prefixed and key.startswith("bert.") else key
        if name.startswith(_IGNORED_PREFIXES) or name in _IGNORED_KEYS:
            continue
        out[name] = tensor
    return out


def read_dnabert_weights(model_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Read ``model.safetensors`` (preferred) or ``pytorch_model.bin`` (``weights_only=True``)."""
    for name in WEIGHT_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                return path, load_file(str(path), device="cpu")
            except Exception as exc:  # safetensors raises its own error types
                raise ModelLoadError(
                    f"{path}: cannot read these safetensors weights ({exc}); copy the file again"
                ) from exc
        state = read_torch_file(path, what="DNABERT-S weights")
        if not isinstance(state, Mapping):
            raise ModelLoadError(
                f"{path}: expected a state dict of tensors, found {type(state).__name__}; "
                "use the pytorch_model.bin of the DNABERT-S snapshot"
            )
        return path, dict(state)
    raise ModelLoadError(
        f"{model_dir}: no DNABERT-S weights ({' or '.join(WEIGHT_FILES)}); copy the DNABERT-S "
        "snapshot directory (config.json, pytorch_model.bin, tokenizer.json) there"
    )


def _materialize(
    config: DnabertConfig,
    state: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    source: Path,
) -> DnabertS:
    """Build on ``meta``, then take ``state`` (checked) on ``device``; slopes made there too."""
    device = torch.device(device)
    with torch.device("meta"):
        model = DnabertS(config)
    assign_state(model, state, device, dtype, source, "DNABERT-S")
    model.slopes = torch.tensor(
        alibi_slopes(config.num_attention_heads), dtype=torch.float32, device=device
    )
    return model


def load_dnabert(
    model_dir: Path, device: torch.device, dtype: torch.dtype
) -> tuple[DnabertS, DnaTokenizer]:
    """Load DNABERT-S from a snapshot directory (``config.json`` + weights [+ ``tokenizer.json``]).

    Linear weights are placed on ``device`` in ``dtype``; the rest stays fp32. The model is in
    eval mode with gradients off. Remote-code ``.py`` files in the directory are ignored.
    """
    model_dir = Path(model_dir)
    config = DnabertConfig.from_json(model_dir / "config.json")
    weights_path, raw = read_dnabert_weights(model_dir)
    model = _materialize(config, normalize_dnabert_state(raw), device, dtype, weights_path)
    return model, DnaTokenizer.from_model_dir(model_dir)


def build_random_dnabert(
    config: DnabertConfig, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> DnabertS:
    """A DNABERT-S of ``config``'s shape with deterministic random weights, made on ``device``.

    For benchmarks: ``build_random_dnabert(DnabertConfig(), torch.device("cuda"), torch.bfloat16)``
    is the real 117M-parameter shape; pair it with ``DnaTokenizer.from_model_dir(Path())``
    (the packaged tokenizer).
    """
    device = torch.device(device)
    with torch.device("meta"):
        layout = DnabertS(config)
    state = random_state(layout, seed, device)
    return _materialize(config, state, device, dtype, Path("<random DNABERT-S>"))
