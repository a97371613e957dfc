"""DNABERT-S's gated feed-forward input, ``gelu(x·W_gateᵀ) * (x·W_upᵀ)``, as one GEMM kernel.

DNABERT-S's ``gated_layers`` is one ``[2I, H]`` linear layer (no bias) whose output is split in
half: ``gelu(h[:, :I]) * h[:, I:]`` (exact GELU). Computed as a GEMM followed by an element-wise
pass, the ``[N, 2I]`` product goes to memory and is read back (at I = 3,072 in bf16, 12 KB per
token, written once and read once). Here the weight's rows are interleaved once, at load
(:func:`interleave_gate_up`: gate row c, then up row c), so that in every output tile a gate
column and its up column are neighbours in the accumulator; the kernel's epilogue applies the
gate in registers and writes only the ``[N, I]`` result. The kernel is persistent (one program
per SM walking the tiles, its loops flattened), so the next tile's loads overlap this tile's
epilogue, whose erf is not free. Operands move by TMA (tensor descriptors), so the kernel needs a
GPU with TMA (Hopper or newer) and a Triton with host tensor descriptors; elsewhere, or if the
kernel fails to build, :func:`geglu_reference` (the GEMM plus the element-wise pass) runs.

Numerics: the gate is applied to the fp32 accumulator, then rounded once to the output dtype;
the reference rounds the GEMM output first. Both are within the dtype's rounding of each other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from virnucpro.models.kernels.triton_support import TritonKernel

__all__ = [
    "geglu_gemm",
    "geglu_reference",
    "geglu_gemm_usable",
    "geglu_gemm_supported",
    "interleave_gate_up",
    "triton_geglu_available",
]

BLOCK_M = 256
BLOCK_N = 128
"""Accumulator columns per tile (gate and up interleaved): 64 output columns. 256 × 128 × 64,
8 warps, 3 stages, persistent, was the fastest of the shapes tried on an H200 (1.75 ms at
101,808 tokens, H = 768, I = 3,072; cuBLAS GEMM + the compiled element-wise pass: 1.87–1.96 ms;
the same tiles launched one program per tile: 1.89 ms). docs/benchmarks.md, 2026-12-01 fourth
session."""
BLOCK_K = 64
WARPS = 8
STAGES = 3


def interleave_gate_up(weight: torch.Tensor) -> torch.Tensor:
    """``[2I, H]`` gated weight (gate rows first, then up rows) -> ``[2I, H]`` with row ``2c`` =
    gate row ``c`` and row ``2c + 1`` = up row ``c`` (contiguous)."""
    inter = weight.shape[0] // 2
    return torch.stack((weight[:inter], weight[inter:]), dim=1).reshape(weight.shape).contiguous()


def geglu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``gelu(h[:, :I]) * h[:, I:]`` with ``h = x·weightᵀ`` (the plain module; ``weight`` NOT
    interleaved)."""
    h = F.linear(x, weight)
    inter = h.shape[-1] // 2
    return F.gelu(h[..., :inter]) * h[..., inter:]


def geglu_gemm_usable(
    x: torch.Tensor, interleaved: torch.Tensor, block_n: int = BLOCK_N, block_k: int = BLOCK_K
) -> bool:
    """Whether :func:`geglu_gemm` runs the Triton kernel for these operands."""
    rows, hidden = x.shape if x.dim() == 2 else (0, 0)
    return (
        x.is_cuda
        and x.dim() == 2
        and rows > 0
        and x.dtype in (torch.bfloat16, torch.float16)
        and interleaved.dtype == x.dtype
        and x.is_contiguous()
        and interleaved.is_contiguous()
        and hidden % block_k == 0
        and interleaved.shape[1] == hidden
        and interleaved.shape[0] % block_n == 0
        and _KERNEL.failed is None
        and geglu_gemm_supported(x.device)
    )


def geglu_gemm_supported(device: torch.device) -> bool:
    """A CUDA device with TMA (compute capability 9.0 or newer) and a Triton that builds the kernel."""
    device = torch.device(device)
    return (
        device.type == "cuda"
        and triton_geglu_available()
        and torch.cuda.get_device_capability(device)[0] >= 9
    )


def geglu_gemm(
    x: torch.Tensor, interleaved: torch.Tensor, weight: torch.Tensor,
    *, block_m: int = BLOCK_M, block_n: int = BLOCK_N, block_k: int = BLOCK_K,
    warps: int = WARPS, stages: int = STAGES,
) -> torch.Tensor:
    """``x [N, H]`` -> ``gelu(x·W_gateᵀ) * (x·W_upᵀ)`` ``[N, I]``, one kernel on CUDA (see the
    module). ``interleaved`` is :func:`interleave_gate_up` of ``weight``; ``weight`` (the module's
    own) is what the reference path uses."""
    if not geglu_gemm_usable(x, interleaved, block_n, block_k):
        return geglu_reference(x, weight)
    from triton.tools.tensor_descriptor import TensorDescriptor

    rows, hidden = x.shape
    inter = interleaved.shape[0] // 2
    out = torch.empty((rows, inter), dtype=x.dtype, device=x.device)
    half = block_n // 2
    tiles = -(-rows // block_m) * (inter // half)
    descriptors = (
        TensorDescriptor.from_tensor(x, [block_m, block_k]),
        TensorDescriptor.from_tensor(interleaved, [block_n, block_k]),
        TensorDescriptor.from_tensor(out, [block_m, half]),
    )
    programs = min(tiles, torch.cuda.get_device_properties(x.device).multi_processor_count)
    launched = _KERNEL.launch(
        (programs,),
        *descriptors, rows, hidden, inter // half,
        PROGRAMS=programs, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if not launched:  # a Triton or GPU that cannot run the kernel: GEMM + element-wise
        return geglu_reference(x, weight)
    return out


def triton_geglu_available() -> bool:
    """Triton with host tensor descriptors importable and a CUDA device present."""
    return _KERNEL.available()


def _build() -> Any:
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401  (the launch needs it)

    @triton.jit
    def geglu_gemm_persistent(  # type: ignore[no-untyped-def]
        x_desc, w_desc, out_desc, rows, hidden, n_blocks,
        PROGRAMS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # one program per SM walks the tiles; the loops are flattened, so the next tile's loads
        # are issued while this tile's epilogue (the erf of the gate) runs
        tiles = tl.cdiv(rows, BLOCK_M) * n_blocks
        k_tiles = tl.cdiv(hidden, BLOCK_K)
        for tile in tl.range(tl.program_id(0), tiles, PROGRAMS, flatten=True):
            block_m = tile // n_blocks
            block_n = tile % n_blocks
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ki in range(k_tiles):
                a = x_desc.load([block_m * BLOCK_M, ki * BLOCK_K])
                w = w_desc.load([block_n * BLOCK_N, ki * BLOCK_K])
                acc = tl.dot(a, w.T, acc)
            gate, up = tl.split(tl.reshape(acc, (BLOCK_M, BLOCK_N // 2, 2)))  # neighbours: registers
            out = 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476)) * up
            out_desc.store([block_m * BLOCK_M, block_n * (BLOCK_N // 2)], out.to(out_desc.dtype))

    return geglu_gemm_persistent


_KERNEL = TritonKernel("GEGLU GEMM", _build)
