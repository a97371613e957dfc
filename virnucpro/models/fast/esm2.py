"""ESM-2 fast path: the function of :mod:`virnucpro.models.reference.esm2`, restructured for
throughput (:class:`FastEsm2`; the plain module stays the CPU / fp32 reference).

- One layer is one pure function of tensors (:func:`esm_layer`), compiled once for all layers
  (:mod:`.compiled`). The q/k/v projections are fused into one GEMM: the fused weight is one
  tensor and the module's ``q_proj``/``k_proj``/``v_proj`` weights become views of it, so no
  memory is added and the plain module still computes the same function. Rotary tables are built
  once (fp32, then the compute dtype) for the longest sequence and sliced per batch.
- No host synchronisation inside a forward: whether a batch needs an attention mask is decided on
  the host from the sequence lengths (equal lengths: no mask, so SDPA can use its flash kernel).
- Optional ``residual_dtype``: the residual stream in the compute dtype instead of fp32 (halves
  the bytes of every element-wise pass; agreement measured by the benchmark).
- Optional ``fp8`` (bf16 weights, packed batches only): the four GEMMs of every layer in FP8 e4m3
  with row-wise scales, their biases corrected for the weights' rounding at the calibration
  proteins' mean inputs (:mod:`.fp8`); attention, norms and the residual stream as in bf16.
- Packed batches (:meth:`FastEsm2.forward_packed`, bf16/fp16 on CUDA; see :mod:`.packing`): no
  padding anywhere, flash attention's variable-length kernel, the q/k/v, out-proj, fc1 and fc2
  GEMMs as cuBLAS calls, q scaling + rotary as one Triton pass (:mod:`~virnucpro.models.kernels.rotary`;
  compiled where Triton is missing), residual + layer norm as one Triton pass
  (:mod:`~virnucpro.models.kernels.add_norm`), and optionally (``fused_gelu``) fc1's
  bias + GELU in the GEMM's cuBLASLt epilogue (tanh GELU). The padded path stays for fp32 (flash
  needs 16-bit inputs) and for head sizes flash refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from virnucpro.models.fast.compiled import CompiledFunction, use_flash_and_efficient_attention
from virnucpro.models.fast.fp8 import (
    Fp8Rounding,
    Fp8Weight,
    calibration_proteins,
    fp8_linear,
    gelu_quantize_rows,
    quantize_rows,
    quantize_weight,
)
from virnucpro.models.fast.fp8_rounding import gram
from virnucpro.models.fast.packing import PackedBatch, pack_rows, pool_packed, varlen_attention
from virnucpro.models.kernels.add_norm import add_layer_norm, add_layer_norm_fp8
from virnucpro.models.kernels.fp8_quantize import quantize_rows_fused, triton_quantize_available
from virnucpro.models.kernels.rotary import rotary_qk, triton_rotary_available
from virnucpro.models.reference.esm2 import MASK_RATIO_TRAIN, Esm2Encoder, apply_rotary

__all__ = [
    "FastEsm2",
    "WARM_DEPTH",
    "esm_layer",
    "esm_attention_inputs",
    "esm_attention_output",
    "esm_ffn_up",
    "esm_ffn_up_fused",
    "esm_ffn_down",
    "esm_rotary_qk",
]


def esm_rotary_qk(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` scaled then rotary on ``q`` and ``k``, from fused ``qkv [..., 3, heads, hd]``."""
    q, k = qkv.select(-3, 0), qkv.select(-3, 1)
    return apply_rotary(q * scaling, cos, sin), apply_rotary(k, cos, sin)


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


WARM_DEPTH = 2
"""Layers of a packed warm-up batch (:meth:`FastEsm2.forward_packed`'s ``depth``): the first
layer, then one with the final norm, so every kernel and specialisation of the whole forward is
loaded. The 36-layer model's whole forward of the 65,536-token warm-up batch cost ~0.64 s of
GPU time in fp16 (1.28 s per 131k tokens, ``docs/bench-results/2026-12-03-h200-run-p1-probe.md``),
spent between the run's first DNABERT-S shards."""


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
        fp8: bool = False,
        fp8_fast_accum: bool = False,
        fp8_rounding: Fp8Rounding = Fp8Rounding.NEAREST,
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
        # packed path (see forward_packed): GEMMs are cuBLAS calls, residual + norm and rotary
        # Triton passes, so no compiler runs in the process (bf16/fp16 with the fused GELU); the
        # rotary step is compiled only where the Triton kernel cannot run
        self.triton_rotary = self.device.type == "cuda" and triton_rotary_available()
        self.packed_rotary = CompiledFunction(
            esm_rotary_qk, enabled=compile, backend=backend, dynamic_dims={0: (0,), 1: (0,), 2: (0,)}
        )
        self.packed_ffn_up = (
            esm_ffn_up_fused if fused_gelu
            else CompiledFunction(esm_ffn_up, enabled=compile, backend=backend, dynamic_dims={0: (0,)})
        )  # fmt: skip
        if fp8 and self.dtype != torch.bfloat16:
            raise ValueError("fp8 linear layers run beside bf16 attention and norms: load the weights in bf16")
        self.fp8 = fp8
        self.fp8_fast_accum = fp8_fast_accum  # the FP8 GEMMs' use_fast_accum (fp8.FAST_ACCUM)
        self.triton_quantize = fp8 and self.device.type == "cuda" and triton_quantize_available()
        self.quantize = CompiledFunction(quantize_rows, enabled=compile and fp8 and not self.triton_quantize,
                                         backend=backend, dynamic_dims={0: (0,)})
        self.gelu_quantize = CompiledFunction(gelu_quantize_rows, enabled=compile and fp8 and not self.triton_quantize,
                                              backend=backend, dynamic_dims={0: (0,)})
        # per layer: q/k/v, out-proj, fc1, fc2 in e4m3, quantised once, here, each bias corrected
        # for its weight's rounding error at the GEMM's mean input over the calibration proteins
        self.fp8_rounding = fp8_rounding
        self.fp8_weights: list[tuple[Fp8Weight, ...]] = []
        if fp8:
            self.fp8_weights = self.calibrated_fp8_weights(calibration_proteins(), fp8_rounding)

    @property
    def compiled_functions(self) -> list[CompiledFunction]:
        """Every compiled function of this runner (for compile-failure reports)."""
        found = [self.layer, self.packed_rotary]
        if isinstance(self.packed_ffn_up, CompiledFunction):
            found.append(self.packed_ffn_up)
        if self.fp8:
            found += [self.quantize, self.gelu_quantize]
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
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
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
            x = x * ((1 - MASK_RATIO_TRAIN) / (1 - observed))[batch.seq_index].unsqueeze(-1)
        return x

    def forward_packed(self, batch: PackedBatch, *, depth: int | None = None) -> torch.Tensor:
        """Last-layer representation ``[N, D]`` fp32 of a packed batch (see :mod:`.packing`).

        Per layer: q/k/v GEMM, rotary (compiled), flash varlen attention, out-proj GEMM, residual
        + norm (:func:`~virnucpro.models.kernels.add_norm.add_layer_norm`, one pass), fc1
        (+GELU), fc2, residual + the NEXT layer's norm (the final norm after the last layer).

        ``depth``: the model cut to its first ``depth`` layers (then the final norm). Every kernel
        of the whole forward runs, at this batch's sizes, for ``depth / layers`` of the arithmetic:
        what a warm-up needs (:data:`WARM_DEPTH`).
        """
        with torch.no_grad():
            x, h, cos, sin, norms = self._packed_start(batch, depth)
            if self.fp8:
                return self._forward_packed_fp8(x, self._quantize(h), cos, sin, batch, norms)
            return self._layers(x, h.to(self.dtype), cos, sin, batch, norms, self.packed_ffn_up)

    def _packed_start(self, batch: PackedBatch, depth: int | None = None) -> tuple[torch.Tensor, ...]:
        """A packed batch's residual stream ``x``, first norm ``h`` (fp32), rotary tables per row
        and the norm after each layer to run (the next layer's; the final norm after the last).
        The layer loops stop with this list: ``depth`` layers, every layer when None."""
        layers = len(self.layer_args)
        depth = layers if depth is None else depth
        if not 1 <= depth <= layers:
            raise ValueError(f"depth {depth}: this ESM-2 has {layers} layers")
        x = self.embed_packed_input(batch).to(self.residual_dtype).contiguous()
        cos, sin = self._tables(batch.max_length)
        final = self.encoder.emb_layer_norm_after
        norms = [(a[0], a[1], self.eps) for a in self.layer_args[1:depth]]
        norms.append((final.weight, final.bias, float(final.eps)))
        ln1_w, ln1_b = self.layer_args[0][:2]
        h = F.layer_norm(x.float(), (x.shape[1],), ln1_w, ln1_b, self.eps)
        return x, h, cos[batch.positions], sin[batch.positions], norms

    def _layers(self, x: torch.Tensor, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                batch: PackedBatch, norms: list[tuple[torch.Tensor, torch.Tensor, float]],
                ffn_up: Callable[..., torch.Tensor], observe: Callable[[int, int, torch.Tensor], None] | None = None,
                ) -> torch.Tensor:
        """The layers of :meth:`forward_packed` in the weights' dtype; ``observe(layer, gemm,
        input)``, when given, sees each GEMM's input (gemm 0-3: q/k/v, out-proj, fc1, fc2)."""
        rows, dim = x.shape
        final_weight = self.encoder.emb_layer_norm_after.weight
        for i, (args, (next_w, next_b, next_eps)) in enumerate(zip(self.layer_args, norms)):
            _, _, wqkv, bqkv, wo, bo, ln2_w, ln2_b, w1, b1, w2, b2 = args
            if observe is not None:
                observe(i, 0, h)
            qkv = F.linear(h, wqkv, bqkv).view(rows, 3, self.heads, dim // self.heads)
            q, k = self._rotary(qkv, cos, sin)
            context = varlen_attention(q, k, qkv.select(1, 2), batch, scale=1.0).reshape(rows, dim)
            if observe is not None:
                observe(i, 1, context)
            x, h = add_layer_norm(x, F.linear(context, wo, bo), ln2_w, ln2_b, self.eps, self.dtype)
            if observe is not None:
                observe(i, 2, h)
            g = ffn_up(h, w1, b1)
            if observe is not None:
                observe(i, 3, g)
            last = next_w is final_weight
            x, h = add_layer_norm(x, F.linear(g, w2, b2), next_w, next_b, next_eps,
                                  torch.float32 if last else self.dtype)
        return h

    def calibration_forward(self, proteins: Sequence[str],
                            observe: Callable[[int, int, torch.Tensor], None]) -> int:
        """One packed forward over ``proteins`` in the weights' dtype (exact GELU), with
        ``observe(layer, gemm, input)`` called at each GEMM's input (gemm 0-3: q/k/v, out-proj,
        fc1, fc2; ``[tokens, K]``); returns the number of tokens."""
        rows = [self.alphabet.encode(p[: self.max_length - 2]) for p in proteins]
        batch = pack_rows(rows, self.device)
        with torch.no_grad():
            x, h, cos, sin, norms = self._packed_start(batch)
            self._layers(x, h.to(self.dtype), cos, sin, batch, norms, esm_ffn_up, observe)
        return batch.n_tokens

    def gemm_input_means(self, proteins: Sequence[str]) -> list[list[torch.Tensor]]:
        """Each GEMM's mean input row over every token of ``proteins`` (sums in fp32):
        ``[layer][gemm]`` -> ``[K]`` fp32, from :meth:`calibration_forward`."""
        sums = [[torch.zeros(0)] * 4 for _ in self.layer_args]

        def observe(layer: int, gemm: int, value: torch.Tensor) -> None:
            sums[layer][gemm] = value.float().sum(dim=0)

        tokens = self.calibration_forward(proteins, observe)
        return [[total / tokens for total in layer] for layer in sums]

    def calibrated_fp8_weights(self, proteins: Sequence[str],
                               rounding: Fp8Rounding) -> list[tuple[Fp8Weight, ...]]:
        """Every layer's four weights in e4m3 (q/k/v, out-proj, fc1, fc2), calibrated on
        :meth:`calibration_forward` over ``proteins``: each bias corrected at its GEMM's mean
        input, and with ``COMPENSATED`` rounding the values rounded by GPTQ's rule over the Gram
        matrix of those inputs (fp32 sums). Each weight is quantised as the forward reaches its GEMM,
        so one Gram matrix is held at a time."""
        found: list[list[Fp8Weight]] = [[] for _ in self.layer_args]
        weight_at = (2, 4, 8, 10)  # the weights' places in layer_args

        def observe(layer: int, gemm: int, value: torch.Tensor) -> None:
            mean = value.float().sum(dim=0) / value.shape[0]
            inputs = gram(value) if rounding is Fp8Rounding.COMPENSATED else None
            args, at = self.layer_args[layer], weight_at[gemm]
            found[layer].append(quantize_weight(args[at], args[at + 1], input_mean=mean, gram=inputs))

        self.calibration_forward(proteins, observe)
        return [tuple(layer) for layer in found]

    def _forward_packed_fp8(self, x: torch.Tensor, h: tuple[torch.Tensor, torch.Tensor], cos: torch.Tensor,
                            sin: torch.Tensor, batch: PackedBatch,
                            norms: list[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
        """:meth:`forward_packed` with the four GEMMs in FP8: ``h`` is the first layer's norm output,
        quantised (e4m3 rows, scales); every later norm writes its output quantised in the same
        Triton pass (:func:`~virnucpro.models.kernels.add_norm.add_layer_norm_fp8`)."""
        rows, dim = x.shape
        final = self.encoder.emb_layer_norm_after
        out = h[0]
        for i, (args, (next_w, next_b, next_eps)) in enumerate(zip(self.layer_args, norms)):
            ln2_w, ln2_b = args[6], args[7]
            w_qkv, w_out, w_fc1, w_fc2 = self.fp8_weights[i]
            fast = self.fp8_fast_accum
            qkv = fp8_linear(*h, w_qkv, fast_accum=fast).view(rows, 3, self.heads, dim // self.heads)
            q, k = self._rotary(qkv, cos, sin)
            context = varlen_attention(q, k, qkv.select(1, 2), batch, scale=1.0).reshape(rows, dim)
            x, *h = add_layer_norm_fp8(x, fp8_linear(*self._quantize(context), w_out, fast_accum=fast),
                                       ln2_w, ln2_b, self.eps)
            up = fp8_linear(*h, w_fc1, fast_accum=fast)
            down = fp8_linear(*self._quantize(up, gelu=True), w_fc2, fast_accum=fast)
            if next_w is final.weight:
                x, out = add_layer_norm(x, down, next_w, next_b, next_eps, torch.float32)
            else:
                x, *h = add_layer_norm_fp8(x, down, next_w, next_b, next_eps)
        return out

    def _quantize(self, x: torch.Tensor, *, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row e4m3 of ``x`` (of ``gelu(x)``): the Triton pass on CUDA, else the reference
        (compiled when compiling)."""
        if self.triton_quantize:
            return quantize_rows_fused(x, gelu=gelu)
        return self.gelu_quantize(x) if gelu else self.quantize(x)

    def _rotary(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q scaling + rotary on q and k of a packed batch: the Triton pass on CUDA, else
        :func:`esm_rotary_qk` (compiled when compiling)."""
        if self.triton_rotary:
            return rotary_qk(qkv, cos, sin, self.scaling)
        return self.packed_rotary(qkv, cos, sin, self.scaling)

    def embed_packed(self, batch: PackedBatch, *, depth: int | None = None) -> torch.Tensor:
        """Mean over residues (BOS/EOS left out) per sequence, fp32 ``[B, D]`` (``depth``: see
        :meth:`forward_packed`)."""
        return pool_packed(self.forward_packed(batch, depth=depth), batch)

