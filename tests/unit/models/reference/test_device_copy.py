"""Weights to the device through pinned staging buffers: bit for bit what ``tensor.to`` gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from virnucpro.models.reference import device_copy
from virnucpro.models.reference.device_copy import copy_to_device


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 5, generator=g),
        torch.randn(1000, 777, generator=g).half(),  # several pieces at the small staging size below
        torch.randint(0, 100, (17,), generator=g),
        torch.empty(0, 4),
        torch.randn(64, 32, generator=g).t(),  # not contiguous
        torch.randn(2, 3, generator=g).to(torch.bfloat16),
    ]


def test_off_cuda_it_is_tensor_to() -> None:
    tensors = _tensors()
    out = copy_to_device(tensors, torch.device("cpu"))
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(out, tensors))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_every_byte_arrives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(device_copy, "STAGING_BYTES", 64 << 10)  # many pieces, every buffer reused
    torch.save({f"t{i}": t for i, t in enumerate(_tensors())}, tmp_path / "w.pt")
    mapped = torch.load(tmp_path / "w.pt", mmap=True, weights_only=True)  # as the loaders read files
    tensors = [mapped[f"t{i}"] for i in range(len(mapped))]
    out = copy_to_device(tensors, torch.device("cuda"))
    for got, want in zip(out, tensors):
        assert got.device.type == "cuda" and got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got.cpu(), want)
