"""DNABERT-S attention: the bias in 16-aligned storage, attention as an op opaque to inductor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from virnucpro.models.kernels.alibi_attention import (
    BIAS_ALIGNMENT,
    aligned_bias,
    alibi_attention,
    register_alibi_attention,
)


@pytest.mark.parametrize("length", [1, 7, 16, 101])
def test_aligned_bias_keeps_values_in_aligned_rows(length: int) -> None:
    bias = torch.randn(3, 2, length, length)
    got = aligned_bias(bias)
    assert torch.equal(got, bias)
    assert all(s % BIAS_ALIGNMENT == 0 for s in got.stride()[:-1]) and got.stride(-1) == 1
    if length % BIAS_ALIGNMENT == 0:
        assert got.data_ptr() == bias.data_ptr()  # already aligned: no copy


def test_alibi_attention_is_sdpa_in_the_kernel_layout() -> None:
    assert register_alibi_attention() is True
    assert register_alibi_attention() is True  # once per process; a second call is a no-op
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    bias = aligned_bias(torch.randn(2, 4, 9, 9))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)
    got = alibi_attention(q, k, v, bias)
    assert got.shape == (2, 9, 4, 8) and got.is_contiguous()
    torch.testing.assert_close(got, expected)


def test_alibi_attention_traces_as_one_opaque_op() -> None:
    register_alibi_attention()
    seen: list[str] = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        seen.extend(str(n.target) for n in graph.graph.nodes if n.op == "call_function")
        return graph.forward

    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    bias = aligned_bias(torch.zeros(1, 2, 5, 5))
    compiled = torch.compile(alibi_attention, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, bias), alibi_attention(q, k, v, bias))
    assert any("alibi_attention" in name for name in seen), seen
    assert not any("scaled_dot_product" in name for name in seen), seen
