"""ALiBi attention on packed sequences (:mod:`virnucpro.models.kernels.alibi_varlen`): the
reference is the padded module's attention with its own bias builder; ``gpu`` tests hold the
Triton kernel to the reference (lengths around the block sizes, more sequences than a grid axis
holds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from virnucpro.models.fast.packing import pack_rows
from virnucpro.models.kernels.alibi_varlen import (
    alibi_varlen_attention,
    alibi_varlen_reference,
    alibi_varlen_usable,
)
from virnucpro.models.reference.dnabert import DnabertConfig, alibi_slopes, build_random_dnabert

CPU = torch.device("cpu")
_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gpu(test):  # type: ignore[no-untyped-def]
    return pytest.mark.gpu(_needs_cuda(test))


def _padded_attention(qkv: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    """The padded module's attention (its own bias builder) on the same q/k/v, repacked."""
    config = DnabertConfig(hidden_size=heads * qkv.shape[-1], num_attention_heads=heads,
                           num_hidden_layers=1, intermediate_size=8)
    model = build_random_dnabert(config, CPU, torch.float32)
    width = max(lengths)
    padded = qkv.new_zeros((len(lengths), width, 3, heads, qkv.shape[-1]))
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    start = 0
    for i, n in enumerate(lengths):
        padded[i, :n] = qkv[start : start + n]
        mask[i, :n] = 1
        start += n
    q, k, v = padded.permute(2, 0, 3, 1, 4).unbind(0)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=model.attention_bias(mask))
    return torch.cat([ctx[i, :, :n].transpose(0, 1) for i, n in enumerate(lengths)])


def test_reference_is_the_padded_modules_alibi_attention() -> None:
    torch.manual_seed(0)
    lengths, heads, head = [7, 1, 12, 3], 12, 4
    qkv = torch.randn(sum(lengths), 3, heads, head)
    batch = pack_rows([[1] * n for n in lengths], CPU, pool_ends=True)
    slopes = torch.tensor(alibi_slopes(heads))
    got = alibi_varlen_reference(qkv, batch, slopes, head**-0.5)
    torch.testing.assert_close(got, _padded_attention(qkv, lengths, heads))
    assert not alibi_varlen_usable(qkv)  # CPU: the reference is what runs
    torch.testing.assert_close(alibi_varlen_attention(qkv, batch, slopes, head**-0.5), got)


# -- device machine ---------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("head", [32, 64])
def test_gpu_triton_alibi_kernel_matches_reference(head: int) -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    lengths, heads = [1, 2, 63, 64, 65, 101, 128, 130, 257, 502], 12
    fused = torch.randn(sum(lengths), 3 * heads * head, device=cuda, dtype=torch.bfloat16)
    qkv = fused.view(-1, 3, heads, head)  # the Wqkv GEMM's output, read through its strides
    batch = pack_rows([[1] * n for n in lengths], cuda, pool_ends=True)
    slopes = torch.tensor(alibi_slopes(heads), device=cuda)
    assert alibi_varlen_usable(qkv)
    got = alibi_varlen_attention(qkv, batch, slopes, head**-0.5)
    want = alibi_varlen_reference(qkv.float(), batch, slopes, head**-0.5)
    assert got.shape == (sum(lengths), heads, head) and got.dtype == torch.bfloat16
    assert float((got.float() - want).abs().max()) < 2e-2
    cos = F.cosine_similarity(got.float().flatten(1), want.flatten(1))
    assert float(cos.min()) > 0.9999


@gpu
def test_gpu_triton_alibi_kernel_takes_more_sequences_than_a_grid_axis_holds() -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(1)
    lengths, heads, head = [1, 2, 3] * 23_000, 2, 16  # 69,000 sequences > 65,535 (a y/z grid limit)
    qkv = torch.randn(sum(lengths), 3, heads, head, device=cuda, dtype=torch.float16)
    slopes = torch.tensor(alibi_slopes(heads), device=cuda)
    got = alibi_varlen_attention(qkv, pack_rows([[1] * n for n in lengths], cuda, pool_ends=True),
                                 slopes, head**-0.5)
    assert alibi_varlen_usable(qkv)  # the kernel ran: no fallback to the reference for good
    tail = lengths[-9:]
    start = sum(lengths) - sum(tail)
    tail_batch = pack_rows([[1] * n for n in tail], cuda, pool_ends=True)
    want = alibi_varlen_reference(qkv[start:].float(), tail_batch, slopes, head**-0.5)
    assert float((got[start:].float() - want).abs().max()) < 1e-2
