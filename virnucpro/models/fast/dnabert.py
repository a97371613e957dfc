"""DNABERT-S fast path: the function of :mod:`virnucpro.models.reference.dnabert`, restructured
for throughput (:class:`FastDnabert`; the plain module stays the CPU / fp32 reference).

- One layer is one pure function of tensors (:func:`dnabert_layer`), compiled once for all
  layers (:mod:`.compiled`).
- In bf16/fp16 the attention runs in the compute dtype with the ALiBi + padding bias in that
  dtype (the plain module keeps attention in fp32); in fp32 nothing changes. The bias is built
  once per batch in 16-aligned storage and attention is an op opaque to inductor
  (:mod:`~virnucpro.models.kernels.alibi_attention`), so no layer copies the bias. Optional
  ``residual_dtype``: the residual stream and layer norms in the compute dtype.
- Packed batches (:meth:`FastDnabert.forward_packed`, bf16/fp16 on CUDA; see :mod:`.packing`):
  no padding and no bias tensor; ALiBi attention over each sequence's own tokens in one Triton
  kernel that reads q/k/v from the Wqkv GEMM's output
  (:mod:`~virnucpro.models.kernels.alibi_varlen`), GEMMs as cuBLAS calls, residual + post-LN norm
  as one Triton pass that does not store the sum, and the GEGLU gate in the gated GEMM's epilogue
  (:mod:`~virnucpro.models.kernels.geglu_gemm`) or as one compiled pointwise kernel. The padded
  path stays for fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from virnucpro.models.fast.compiled import CompiledFunction, use_flash_and_efficient_attention
from virnucpro.models.fast.packing import PackedBatch, pool_packed
from virnucpro.models.kernels.add_norm import add_layer_norm
from virnucpro.models.kernels.alibi_attention import (
    aligned_bias,
    alibi_attention,
    register_alibi_attention,
)
from virnucpro.models.kernels.alibi_varlen import alibi_varlen_attention
from virnucpro.models.kernels.geglu_gemm import geglu_gemm, geglu_gemm_supported, interleave_gate_up
from virnucpro.models.reference.dnabert import DnabertS

__all__ = ["FastDnabert", "dnabert_layer", "dnabert_geglu"]


def dnabert_geglu(h: torch.Tensor) -> torch.Tensor:
    """``gelu(h[:, :I]) * h[:, I:]`` (exact GELU), the gate of DNABERT-S's feed-forward block."""
    inter = h.shape[-1] // 2
    return F.gelu(h[..., :inter]) * h[..., inter:]


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
    :func:`~virnucpro.models.kernels.alibi_attention.aligned_bias`). The residual stream keeps
    ``x``'s dtype (fp32 from the plain module's fp32 embeddings; see
    ``FastDnabert(residual_dtype=)``), and the layer norm parameters must be in that dtype.
    """
    batch, length, hidden = x.shape
    compute = wqkv.dtype
    qkv = F.linear(x.to(compute), wqkv, bqkv).to(bias.dtype)
    qkv = qkv.view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    context = alibi_attention(q, k, v, bias).reshape(batch, length, hidden).to(compute)
    x = F.layer_norm(F.linear(context, wd, bd).to(x.dtype) + x, (hidden,), ln1_w, ln1_b, eps)
    h = dnabert_geglu(F.linear(x.to(compute), wg))
    return F.layer_norm(F.linear(h, wo, bo).to(x.dtype) + x, (hidden,), ln2_w, ln2_b, eps)


class FastDnabert:
    """DNABERT-S forward for throughput: ``forward(input_ids, lengths)`` -> ``[B, T, H]``.

    ``attention_dtype`` defaults to the compute dtype (fp32 stays fp32). ``residual_dtype``:
    None keeps the plain module's fp32 residual stream and layer norms; ``torch.bfloat16`` runs
    them in bf16 (the layer norms still accumulate in fp32 inside the kernel), which halves the
    bytes of every element-wise pass. Padded rows are zeroed as in :class:`DnabertS`.
    ``fused_geglu`` (packed path only): the gated GEMM and the GEGLU gate as one Triton kernel
    (:mod:`~virnucpro.models.kernels.geglu_gemm`, weights interleaved once here: +2·I·H values
    per layer, 113 MB for DNABERT-S in bf16); None = on in bf16/fp16 where the kernel is
    supported.
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
        # the ALiBi custom op matters only to the compiler (padded path): registered at its first
        # call, since torch.library imports the fake-tensor machinery (seconds of a worker's start)
        self.opaque_attention: bool | None = None  # False: plain SDPA (see the module)
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
        if self.layer.enabled and self.opaque_attention is None:
            self.opaque_attention = register_alibi_attention()
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
        (:func:`~virnucpro.models.kernels.alibi_varlen.alibi_varlen_attention`, reading q/k/v
        from the GEMM's output); dense GEMM; residual + norm (one pass); the gated GEMM with the GEGLU gate
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

