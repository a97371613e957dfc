"""GPU fast path for both encoders: the same functions as :mod:`~virnucpro.models.reference.esm2` and
:mod:`~virnucpro.models.reference.dnabert`, restructured for throughput.

What changes against the plain modules (which stay the CPU / fp32 reference):

- one layer is one pure function of tensors (:func:`esm_layer`, :func:`dnabert_layer`); with
  ``compile=True`` it goes through ``torch.compile`` ONCE per process and every layer reuses the
  graph (weights are arguments, not module attributes, so 36 layers share one compilation).
  Batch and length dimensions are marked dynamic, so new shapes do not recompile; at most two
  graphs exist per model (with and without an attention mask). Inductor fuses layer norm + cast,
  q scaling + rotary (both q and k) and GELU into a handful of kernels per layer.
- ESM-2: q/k/v projections fused into one GEMM. The fused weight is one tensor and the module's
  ``q_proj``/``k_proj``/``v_proj`` weights become views of it, so no memory is added and the
  plain module still computes the same function. Rotary tables are built once (fp32, then the
  compute dtype) for the longest sequence and sliced per batch.
- No host synchronisation inside a forward: whether a batch needs an attention mask is decided on
  the host from the sequence lengths (equal lengths: no mask, so SDPA can use its flash kernel).
- DNABERT-S: in bf16/fp16 the attention runs in the compute dtype with the ALiBi + padding bias
  in that dtype (the plain module keeps attention in fp32); in fp32 nothing changes. The bias is
  built once per batch in 16-aligned storage and attention is an op opaque to inductor
  (:mod:`~virnucpro.models.kernels.alibi_attention`), so no layer copies the bias. Optional
  ``residual_dtype`` as for ESM-2.
- DNABERT-S packed batches (:meth:`FastDnabert.forward_packed`, bf16/fp16 on CUDA): no padding
  and no bias tensor; ALiBi attention over each sequence's own tokens in one Triton kernel that
  reads q/k/v from the Wqkv GEMM's output (:mod:`~virnucpro.models.kernels.alibi_varlen`), GEMMs as cuBLAS
  calls, residual + post-LN norm as one Triton pass that does not store the sum, and the GEGLU
  gate as one compiled pointwise kernel. The padded path stays for fp32.
- Optional ``residual_dtype``: the ESM-2 residual stream in the compute dtype instead of fp32
  (halves the bytes of every element-wise pass; agreement measured by the benchmark).
- ESM-2 packed batches (:meth:`FastEsm2.forward_packed`, bf16/fp16 on CUDA; see
  :mod:`~virnucpro.models.fast.packing`): no padding anywhere, flash attention's variable-length
  kernel, the q/k/v, out-proj, fc1 and fc2 GEMMs as cuBLAS calls, rotary as one compiled pointwise
  kernel, residual + layer norm as one Triton pass (:mod:`~virnucpro.models.kernels.add_norm`), and
  optionally (``fused_gelu``) fc1's bias + GELU in the GEMM's cuBLASLt epilogue (tanh GELU).
  The padded path stays for fp32 (flash needs 16-bit inputs) and for head sizes flash refuses.

A compiled call that fails for any reason but running out of memory logs a warning and falls
back to the eager function, which computes the same thing, for calls of that signature (with or
without a mask) from then on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.fast.packing import PackedBatch, pool_packed, varlen_attention
from virnucpro.models.kernels.add_norm import add_layer_norm
from virnucpro.models.kernels.alibi_attention import (
    alibi_attention,
    aligned_bias,
    register_alibi_attention,
)
from virnucpro.models.kernels.alibi_varlen import alibi_varlen_attention
from virnucpro.models.kernels.geglu_gemm import geglu_gemm, geglu_gemm_supported, interleave_gate_up
from virnucpro.models.reference.dnabert import DnabertS
from virnucpro.models.reference.esm2 import Esm2Encoder

__all__ = [
    "CompiledFunction",
    "FastEsm2",
    "FastDnabert",
    "esm_layer",
    "dnabert_layer",
    "dnabert_geglu",
    "esm_attention_inputs",
    "esm_attention_output",
    "esm_ffn_up",
    "esm_ffn_up_fused",
    "esm_ffn_down",
    "esm_rotary_qk",
    "compile_default",
    "use_flash_and_efficient_attention",
    "COMPILE_ENV",
]

logger = logging.getLogger(__name__)

COMPILE_ENV = "VIRNUCPRO_COMPILE"
"""``0`` turns ``torch.compile`` off everywhere; ``1`` turns it on (also for fp32)."""

_MASK_RATIO_TRAIN = 0.15 * 0.8


def use_flash_and_efficient_attention(device: torch.device) -> None:
    """On CUDA, keep SDPA on its flash / memory-efficient kernels, never cuDNN attention.

    cuDNN attention builds a plan for every new (batch, length) shape, which costs tens of
    milliseconds per batch when batch shapes vary, as they do here (measured on an H200: the
    DNABERT-S stage ran at a quarter of its kernel-time rate). Process-wide setting.
    """
    if torch.device(device).type == "cuda" and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def compile_default(device: torch.device, dtype: torch.dtype) -> bool:
    """Compile by default on CUDA in bf16/fp16; ``$VIRNUCPRO_COMPILE`` (0/1) overrides."""
    forced = os.environ.get(COMPILE_ENV, "").strip()
    if forced in {"0", "1"}:
        return forced == "1"
    return torch.device(device).type == "cuda" and dtype in (torch.bfloat16, torch.float16)


class CompiledFunction:
    """``torch.compile`` of a function, made once, with dynamic batch/length and an eager fallback.

    ``dynamic_dims`` maps a positional argument index to the dimensions marked dynamic
    (``maybe_mark_dynamic``). A call where one of those dimensions is 1 (a batch of one
    sequence) runs eagerly instead of compiling a specialised graph for it.
    """

    _cache: dict[tuple[Callable[..., Any], str], Callable[..., Any]] = {}

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        enabled: bool,
        backend: str = "inductor",
        dynamic_dims: dict[int, Sequence[int]] | None = None,
    ) -> None:
        self.fn = fn
        self.enabled = enabled
        self.backend = backend
        self.dynamic_dims = dict(dynamic_dims or {})
        self.failed: str | None = None  # the last compile error, if any
        self._failed: set[tuple[bool, ...]] = set()  # call signatures that run eagerly
        self.calls = 0
        self.eager_calls = 0

    def _compiled(self) -> Callable[..., Any]:
        key = (self.fn, self.backend)
        if key not in self._cache:
            self._cache[key] = torch.compile(self.fn, backend=self.backend, dynamic=None)
        return self._cache[key]

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        signature = tuple(a is None for a in args)  # e.g. with / without an attention mask
        if not self.enabled or signature in self._failed:
            return self.fn(*args)
        marks = []
        for index, dims in self.dynamic_dims.items():
            tensor = args[index]
            if isinstance(tensor, torch.Tensor):
                if any(tensor.shape[d] == 1 for d in dims):
                    self.eager_calls += 1  # a size-1 dimension would specialise: one more graph
                    return self.fn(*args)
                marks.extend((tensor, d) for d in dims)
        for tensor, dim in marks:
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
        try:
            return self._compiled()(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compiler missing or broken: the eager path is the same function
            self._failed.add(signature)
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "torch.compile of %s failed (%s); using the eager version for these calls",
                self.fn.__name__, self.failed.splitlines()[0][:300],
            )
            return self.fn(*args)


# -- ESM-2 -------------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def esm_rotary_qk(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` scaled then rotary on ``q`` and ``k``, from fused ``qkv [..., 3, heads, hd]``."""
    q, k = qkv.select(-3, 0), qkv.select(-3, 1)
    return _rotary(q * scaling, cos, sin), _rotary(k, cos, sin)


def esm_attention_inputs(
    x: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    wqkv: torch.Tensor,
    bqkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    scaling: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer norm (fp32) → fused q/k/v → q scaled, rotary on q and k; ``x [..., D]``.

    Returns ``q, k, v`` as ``[..., heads, head_dim]`` in the weights' dtype; ``cos``/``sin``
    broadcast over them (``[T, 1, hd]`` for ``[B, T, ...]``, ``[N, 1, hd]`` for packed rows).
    """
    dim = x.shape[-1]
    h = F.layer_norm(x.float(), (dim,), ln_w, ln_b, eps).to(wqkv.dtype)
    qkv = F.linear(h, wqkv, bqkv).view(*x.shape[:-1], 3, heads, dim // heads)
    q, k = esm_rotary_qk(qkv, cos, sin, scaling)
    return q, k, qkv.select(-3, 2)


def esm_attention_output(
    x: torch.Tensor,
    context: torch.Tensor,
    wo: torch.Tensor,
    bo: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual ``x + out_proj(context)`` (in ``x``'s dtype) and its layer norm (fp32 → compute)."""
    dim = x.shape[-1]
    x = (x + F.linear(context, wo, bo)).to(x.dtype)
    return x, F.layer_norm(x.float(), (dim,), ln_w, ln_b, eps).to(wo.dtype)


def esm_ffn_up(h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """``gelu(fc1(h))`` with the exact (erf) GELU, as fair-esm."""
    return F.gelu(F.linear(h, w1, b1))


def esm_ffn_up_fused(h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """``gelu(fc1(h))`` in ONE cuBLASLt call (bias + GELU epilogue): the 4·D-wide activation is
    written once instead of written, read and written again. cuBLASLt's GELU is the tanh
    approximation (|Δ| < 5e-4 against erf, under bf16's own rounding of these values); offered
    for bf16/fp16 only, with its agreement measured by the benchmark and ``validate-precision``.
    """
    flat = h.reshape(-1, h.shape[-1])
    out = torch._addmm_activation(b1, flat, w1.t(), use_gelu=True)
    return out.view(*h.shape[:-1], w1.shape[0])


def esm_ffn_down(x: torch.Tensor, g: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Residual ``x + fc2(g)`` in ``x``'s dtype."""
    return (x + F.linear(g, w2, b2)).to(x.dtype)


def esm_layer(
    x: torch.Tensor,
    key_mask: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    ln1_w: torch.Tensor,
    ln1_b: torch.Tensor,
    wqkv: torch.Tensor,
    bqkv: torch.Tensor,
    wo: torch.Tensor,
    bo: torch.Tensor,
    ln2_w: torch.Tensor,
    ln2_b: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    heads: int,
    scaling: float,
    eps: float,
) -> torch.Tensor:
    """One ESM-2 layer (pre-LN, rotary q/k, SDPA, GELU FFN) on padded ``x [B, T, D]``.

    Same operations and dtypes as ``esm2._Layer`` with a fused q/k/v projection: layer norms in
    fp32, matmuls/rotary/attention in the weights' dtype, residual sums in ``x``'s dtype.
    """
    batch, length, dim = x.shape
    q, k, v = esm_attention_inputs(x, ln1_w, ln1_b, wqkv, bqkv, cos, sin, heads, scaling, eps)
    context = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask, scale=1.0
    )
    x, h = esm_attention_output(x, context.transpose(1, 2).reshape(batch, length, dim), wo, bo, ln2_w, ln2_b, eps)
    return esm_ffn_down(x, esm_ffn_up(h, w1, b1), w2, b2)


class FastEsm2:
    """ESM-2 forward for throughput: ``forward(tokens, uniform)`` -> ``[B, T, D]`` fp32.

    Built from a loaded :class:`Esm2Encoder` (shares its weights). ``uniform=True`` promises
    that no row of ``tokens`` is padded (the caller knows the lengths), so no mask is built.
    """

    def __init__(
        self,
        encoder: Esm2Encoder,
        *,
        compile: bool = False,
        backend: str = "inductor",
        residual_dtype: torch.dtype = torch.float32,
        max_length: int = 1026,
        fused_gelu: bool = False,
    ) -> None:
        self.encoder = encoder
        self.spec = encoder.spec
        self.alphabet = encoder.alphabet
        self.residual_dtype = residual_dtype
        first = encoder.layers[0]
        self.device = first.fc1.weight.device
        self.dtype = first.fc1.weight.dtype
        self.heads = first.self_attn.heads
        self.scaling = float(first.self_attn.scaling)
        self.eps = float(first.self_attn_layer_norm.eps)
        self.layer_args: list[tuple[torch.Tensor, ...]] = [self._fuse(layer) for layer in encoder.layers]
        self._cos, self._sin = first.self_attn.rot_emb.tables(max_length, self.device, self.dtype)
        self.max_length = max_length
        use_flash_and_efficient_attention(self.device)
        self.layer = CompiledFunction(
            esm_layer, enabled=compile, backend=backend, dynamic_dims={0: (0, 1), 1: (0, 3), 2: (0,), 3: (0,)}
        )
        if fused_gelu and self.dtype == torch.float32:
            raise ValueError("fused_gelu (tanh GELU in the GEMM epilogue) is for bf16/fp16 only")
        self.fused_gelu = fused_gelu
        # packed path (see forward_packed): GEMMs are cuBLAS calls, residual + norm one Triton
        # pass; only the rotary step is compiled (one pointwise kernel, dynamic token count)
        self.packed_rotary = CompiledFunction(
            esm_rotary_qk, enabled=compile, backend=backend, dynamic_dims={0: (0,), 1: (0,), 2: (0,)}
        )
        self.packed_ffn_up = (
            esm_ffn_up_fused if fused_gelu
            else CompiledFunction(esm_ffn_up, enabled=compile, backend=backend, dynamic_dims={0: (0,)})
        )  # fmt: skip

    @property
    def compiled_functions(self) -> list[CompiledFunction]:
        """Every compiled function of this runner (for compile-failure reports)."""
        found = [self.layer, self.packed_rotary]
        if isinstance(self.packed_ffn_up, CompiledFunction):
            found.append(self.packed_ffn_up)
        return found

    @staticmethod
    def _fuse(layer: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        """Concatenate q/k/v into one weight and bias; the module's own become views of them.

        Done once per layer: a second fast runner over the same encoder reuses the fused tensors.
        """
        attn = layer.self_attn
        fused = getattr(attn, "_fused_qkv", None)
        if fused is None or attn.q_proj.weight.data_ptr() != fused[0].data_ptr():
            with torch.no_grad():
                weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            dim = attn.q_proj.weight.shape[0]
            for i, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
                proj.weight = torch.nn.Parameter(weight[i * dim : (i + 1) * dim], requires_grad=False)
                proj.bias = torch.nn.Parameter(bias[i * dim : (i + 1) * dim], requires_grad=False)
            fused = (weight, bias)
            object.__setattr__(attn, "_fused_qkv", fused)
        weight, bias = fused
        return (
            layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias,
            weight, bias, attn.out_proj.weight, attn.out_proj.bias,
            layer.final_layer_norm.weight, layer.final_layer_norm.bias,
            layer.fc1.weight, layer.fc1.bias, layer.fc2.weight, layer.fc2.bias,
        )  # fmt: skip

    def _tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if length > self._cos.shape[0]:
            rot = self.encoder.layers[0].self_attn.rot_emb
            self._cos, self._sin = rot.tables(length, self.device, self.dtype)
        return self._cos[:length], self._sin[:length]

    def embed_input(self, tokens: torch.Tensor, uniform: bool) -> torch.Tensor:
        """Token embedding with fair-esm's token-dropout rescaling; padded rows zeroed."""
        enc, alphabet = self.encoder, self.alphabet
        x = enc.embed_tokens(tokens).float()
        padding = None if uniform else tokens.eq(alphabet.padding_idx)
        if self.spec.token_dropout:
            masked = tokens.eq(alphabet.mask_idx)
            x = x.masked_fill(masked.unsqueeze(-1), 0.0)
            real = tokens.shape[1] if padding is None else (~padding).sum(-1)
            observed = masked.sum(-1).to(x.dtype) / real
            x = x * (1 - _MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
        if padding is not None:
            x = x * (1 - padding.unsqueeze(-1).type_as(x))
        return x

    def __call__(self, tokens: torch.Tensor, uniform: bool) -> torch.Tensor:
        return self.forward(tokens, uniform)

    def forward(self, tokens: torch.Tensor, uniform: bool) -> torch.Tensor:
        with torch.no_grad():
            x = self.embed_input(tokens, uniform).to(self.residual_dtype)
            key_mask = None if uniform else tokens.ne(self.alphabet.padding_idx)[:, None, None, :]
            cos, sin = self._tables(tokens.shape[1])
            for args in self.layer_args:
                x = self.layer(x, key_mask, cos, sin, *args, self.heads, self.scaling, self.eps)
            return self.encoder.emb_layer_norm_after(x.float())

    def embed_packed_input(self, batch: PackedBatch) -> torch.Tensor:
        """:meth:`embed_input` for a packed batch ``[N, D]`` (no padding to zero)."""
        enc, alphabet = self.encoder, self.alphabet
        x = enc.embed_tokens(batch.tokens).float()
        if self.spec.token_dropout:
            masked = batch.tokens.eq(alphabet.mask_idx)
            x = x.masked_fill(masked.unsqueeze(-1), 0.0)
            per_seq = torch.zeros(batch.n_sequences, device=x.device, dtype=x.dtype)
            per_seq.index_add_(0, batch.seq_index, masked.to(x.dtype))  # integer counts: exact
            real = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).to(x.dtype)
            observed = per_seq / real
            x = x * ((1 - _MASK_RATIO_TRAIN) / (1 - observed))[batch.seq_index].unsqueeze(-1)
        return x

    def forward_packed(self, batch: PackedBatch) -> torch.Tensor:
        """Last-layer representation ``[N, D]`` fp32 of a packed batch (see :mod:`.packing`).

        Per layer: q/k/v GEMM, rotary (compiled), flash varlen attention, out-proj GEMM, residual
        + norm (:func:`~virnucpro.models.kernels.add_norm.add_layer_norm`, one pass), fc1 (+GELU), fc2,
        residual + the NEXT layer's norm (the final norm after the last layer).
        """
        with torch.no_grad():
            x = self.embed_packed_input(batch).to(self.residual_dtype).contiguous()
            cos, sin = self._tables(batch.max_length)
            cos, sin = cos[batch.positions], sin[batch.positions]  # [N, 1, hd]
            rows, dim = x.shape
            final = self.encoder.emb_layer_norm_after
            norms = [(a[0], a[1], self.eps) for a in self.layer_args[1:]]
            norms.append((final.weight, final.bias, float(final.eps)))
            ln1_w, ln1_b = self.layer_args[0][:2]
            h = F.layer_norm(x.float(), (dim,), ln1_w, ln1_b, self.eps).to(self.dtype)
            for args, (next_w, next_b, next_eps) in zip(self.layer_args, norms):
                _, _, wqkv, bqkv, wo, bo, ln2_w, ln2_b, w1, b1, w2, b2 = args
                qkv = F.linear(h, wqkv, bqkv).view(rows, 3, self.heads, dim // self.heads)
                q, k = self.packed_rotary(qkv, cos, sin, self.scaling)
                context = varlen_attention(q, k, qkv.select(1, 2), batch, scale=1.0)
                x, h = add_layer_norm(x, F.linear(context.reshape(rows, dim), wo, bo),
                                      ln2_w, ln2_b, self.eps, self.dtype)
                g = self.packed_ffn_up(h, w1, b1)
                last = next_w is final.weight
                x, h = add_layer_norm(x, F.linear(g, w2, b2), next_w, next_b, next_eps,
                                      torch.float32 if last else self.dtype)
            return h

    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """Mean over residues (BOS/EOS left out) per sequence, fp32 ``[B, D]``."""
        return pool_packed(self.forward_packed(batch), batch)


# -- DNABERT-S ---------------------------------------------------------------------------------
def dnabert_layer(
    x: torch.Tensor,
    bias: torch.Tensor,
    wqkv: torch.Tensor,
    bqkv: torch.Tensor,
    wd: torch.Tensor,
    bd: torch.Tensor,
    ln1_w: torch.Tensor,
    ln1_b: torch.Tensor,
    wg: torch.Tensor,
    wo: torch.Tensor,
    bo: torch.Tensor,
    ln2_w: torch.Tensor,
    ln2_b: torch.Tensor,
    heads: int,
    eps: float,
) -> torch.Tensor:
    """One DNABERT-S layer (post-LN, ALiBi attention via ``bias``, GEGLU) on ``x [B, T, H]``.

    Attention runs in ``bias``'s dtype (fp32 = the plain module; bf16/fp16 = fast), through
    :func:`~virnucpro.models.kernels.alibi_attention.alibi_attention` (give it an
    :func:`~virnucpro.models.kernels.alibi_attention.aligned_bias`). The residual stream keeps ``x``'s
    dtype (fp32 from the plain module's fp32 embeddings; see ``FastDnabert(residual_dtype=)``), and
    the layer norm parameters must be in that dtype.
    """
    batch, length, hidden = x.shape
    compute = wqkv.dtype
    qkv = F.linear(x.to(compute), wqkv, bqkv).to(bias.dtype)
    qkv = qkv.view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    context = alibi_attention(q, k, v, bias).reshape(batch, length, hidden).to(compute)
    x = F.layer_norm(F.linear(context, wd, bd).to(x.dtype) + x, (hidden,), ln1_w, ln1_b, eps)
    h = F.linear(x.to(compute), wg)
    inter = h.shape[-1] // 2
    h = F.gelu(h[..., :inter]) * h[..., inter:]
    return F.layer_norm(F.linear(h, wo, bo).to(x.dtype) + x, (hidden,), ln2_w, ln2_b, eps)


def dnabert_geglu(h: torch.Tensor) -> torch.Tensor:
    """``gelu(h[:, :I]) * h[:, I:]`` (exact GELU), the gate of DNABERT-S's feed-forward block."""
    inter = h.shape[-1] // 2
    return F.gelu(h[..., :inter]) * h[..., inter:]


class FastDnabert:
    """DNABERT-S forward for throughput: ``forward(input_ids, lengths)`` -> ``[B, T, H]``.

    ``attention_dtype`` defaults to the compute dtype (fp32 stays fp32). ``residual_dtype``:
    None keeps the plain module's fp32 residual stream and layer norms; ``torch.bfloat16`` runs
    them in bf16 (the layer norms still accumulate in fp32 inside the kernel), which halves the
    bytes of every element-wise pass. Padded rows are zeroed as in :class:`DnabertS`.
    ``fused_geglu`` (packed path only): the gated GEMM and the GEGLU gate as one Triton kernel
    (:mod:`~virnucpro.models.kernels.geglu_gemm`, weights interleaved once here: +2·I·H values per layer,
    113 MB for DNABERT-S in bf16); None = on in bf16/fp16 where the kernel is supported.
    """

    def __init__(
        self,
        model: DnabertS,
        *,
        compile: bool = False,
        backend: str = "inductor",
        attention_dtype: torch.dtype | None = None,
        residual_dtype: torch.dtype | None = None,
        fused_geglu: bool | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        first = model.encoder.layer[0]
        self.dtype = first.attention.self.Wqkv.weight.dtype
        self.device = first.attention.self.Wqkv.weight.device
        self.attention_dtype = attention_dtype or self.dtype
        self.residual_dtype = residual_dtype
        self.heads = model.config.num_attention_heads
        self.eps = float(model.config.layer_norm_eps)

        def norm(t: torch.Tensor) -> torch.Tensor:  # layer norm parameters in the residual dtype
            return t if residual_dtype is None else t.detach().to(residual_dtype)

        self.layer_args = [
            (
                layer.attention.self.Wqkv.weight, layer.attention.self.Wqkv.bias,
                layer.attention.output.dense.weight, layer.attention.output.dense.bias,
                norm(layer.attention.output.LayerNorm.weight),
                norm(layer.attention.output.LayerNorm.bias),
                layer.mlp.gated_layers.weight, layer.mlp.wo.weight, layer.mlp.wo.bias,
                norm(layer.mlp.layernorm.weight), norm(layer.mlp.layernorm.bias),
            )  # fmt: skip
            for layer in model.encoder.layer
        ]
        use_flash_and_efficient_attention(self.device)
        self.opaque_attention = register_alibi_attention()  # False: plain SDPA (see the module)
        self.layer = CompiledFunction(
            dnabert_layer, enabled=compile, backend=backend, dynamic_dims={0: (0, 1), 1: (0, 2, 3)}
        )
        # packed path (see forward_packed): GEMMs are cuBLAS calls, attention one Triton kernel,
        # residual + norm one Triton pass; only the GEGLU gate is compiled (one pointwise kernel)
        self.packed_geglu = CompiledFunction(
            dnabert_geglu, enabled=compile, backend=backend, dynamic_dims={0: (0,)}
        )
        # or the gated GEMM and the gate in one Triton kernel (weights interleaved once, here)
        if fused_geglu is None:
            fused_geglu = self.dtype in (torch.bfloat16, torch.float16) and geglu_gemm_supported(self.device)
        self.gated_interleaved = (
            [interleave_gate_up(args[6].detach()) for args in self.layer_args] if fused_geglu else None
        )

    @property
    def compiled_functions(self) -> list[CompiledFunction]:
        """Every compiled function of this runner (for compile-failure reports)."""
        return [self.layer, self.packed_geglu]

    @property
    def packable(self) -> bool:
        """Whether :meth:`forward_packed` computes what :meth:`forward` does: attention in the
        compute dtype (the packed kernel has no separate attention dtype)."""
        return self.attention_dtype == self.dtype

    def __call__(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.forward(input_ids, keep)

    def forward(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``keep [B, T]`` bool (True on real tokens)."""
        with torch.no_grad():
            bias = aligned_bias(
                self.model.attention_bias(keep.to(torch.long)).to(self.attention_dtype)
            )
            x = self.model.embeddings(input_ids)
            if self.residual_dtype is not None:
                x = x.to(self.residual_dtype)
            for args in self.layer_args:
                x = self.layer(x, bias, *args, self.heads, self.eps)
            return x.masked_fill(~keep[..., None], 0.0)

    def forward_packed(self, batch: PackedBatch) -> torch.Tensor:
        """Last hidden state ``[N, H]`` of a packed batch (see :mod:`.packing`), in the residual
        dtype (fp32 unless ``residual_dtype`` is set).

        Per layer: Wqkv GEMM; ALiBi attention over each sequence's own tokens
        (:func:`~virnucpro.models.kernels.alibi_varlen.alibi_varlen_attention`, reading q/k/v from the
        GEMM's output); dense GEMM; residual + norm (one pass); the gated GEMM with the GEGLU gate
        in its epilogue (:func:`~virnucpro.models.kernels.geglu_gemm.geglu_gemm`; or, with
        ``fused_geglu`` off, the gated GEMM and the compiled gate); wo GEMM; residual + norm.
        Post-LN: the norm's output is the next residual.
        """
        with torch.no_grad():
            x = self.model.embeddings(batch.tokens)
            x = x.to(self.residual_dtype or torch.float32).contiguous()
            rows, hidden = x.shape
            head = hidden // self.heads
            scale = head**-0.5
            slopes = self.model.slopes
            for index, args in enumerate(self.layer_args):
                wqkv, bqkv, wd, bd, ln1_w, ln1_b, wg, wo, bo, ln2_w, ln2_b = args
                qkv = F.linear(x.to(self.dtype), wqkv, bqkv).view(rows, 3, self.heads, head)
                context = alibi_varlen_attention(qkv, batch, slopes, scale).view(rows, hidden)
                attended = F.linear(context, wd, bd)
                _, x = add_layer_norm(x, attended, ln1_w, ln1_b, self.eps, x.dtype, store_sum=False)
                if self.gated_interleaved is not None:
                    gate = geglu_gemm(x.to(self.dtype), self.gated_interleaved[index], wg)
                else:
                    gate = self.packed_geglu(F.linear(x.to(self.dtype), wg))
                _, x = add_layer_norm(x, F.linear(gate, wo, bo), ln2_w, ln2_b, self.eps, x.dtype,
                                      store_sum=False)  # fmt: skip
            return x

    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """Mean over every token (``[CLS]``/``[SEP]`` included) per sequence, fp32 ``[B, H]``."""
        return pool_packed(self.forward_packed(batch), batch)
