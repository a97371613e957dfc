"""FP8 (e4m3) linear layers for ESM-2 on Hopper-class GPUs (``--precision fp8``, opt-in).

ESM-2 3B is ~97% of the run's arithmetic and its four GEMMs per layer (q/k/v, out-proj, fc1, fc2)
are most of that. In FP8 an H200 runs that GEMM mix at 1.66-1.77 × bf16's rate (issue 17's probe:
``torch._scaled_mm``, M = 16,384). This module holds the arithmetic of one FP8 linear layer:

- **weights** are quantised once, at load, per output channel (row-wise scales: each row of the
  weight gets ``amax(|row|) / 448``, e4m3's largest finite value), and kept transposed, as
  ``torch._scaled_mm`` wants its second operand (column-major);
- **activations** are quantised per row (per token) with the same rule
  (:mod:`~virnucpro.models.kernels.fp8_rows`): after a residual + layer norm inside that Triton
  pass (the norm's output is written in e4m3 with its scales, never in bf16); fc1's output
  together with its GELU (the tanh form, as the bf16/fp16 paths' fused epilogue), and the
  attention output, each in one Triton pass (:mod:`~virnucpro.models.kernels.fp8_quantize`);
- the product runs in ``torch._scaled_mm`` with both scale vectors and the bias, output bf16;
- **bias correction**: a weight's rounding error ``E = W - Ŵ`` (``Ŵ`` the dequantised weight) is
  the same for every token, so it does not average out over a protein's residues the way the
  activations' rounding does: it shifts the mean embedding that VirNucPro keeps. Measured on
  ESM-2 3B's shape (``bench/probe_fp8.py``, emulated e4m3), the weights' rounding was nearly all
  of FP8's error. Each bias absorbs that error at the GEMM's mean input ``μ``: ``b' = b + E·μ``,
  ``μ`` from one bf16 forward over :func:`calibration_proteins` (64 real proteins, fixed, so the
  quantised model is the same on every run). No cost per token.
- **compensated rounding** (:data:`ROUNDING`): the bias correction leaves a protein whose mean
  input lies away from ``μ`` with ``E·(x̄ - μ)``; the worst frames stayed at cosine 0.9988
  against fp32. The same forward's inputs give each GEMM's Gram matrix, and GPTQ's rule rounds
  the weight's values so that ``E·x`` stays small for inputs like them
  (:mod:`~virnucpro.models.fast.fp8_rounding`): same scales, same GEMMs, no cost per token; the
  worst of 512 frames measured 0.99952 against 0.99803 (run N2, ``docs/benchmarks.md``); the load
  takes ~6 s more on an H200.

Attention, layer norms, rotary and the residual stream are those of the bf16 path; only the four
linear layers change. Agreement with fp32 is measured like the other precisions (benchmark rows
and ``virnucpro validate-precision``); the README says to validate on one's own weights first.

Requirements: CUDA compute capability ≥ 8.9 (Ada, Hopper and newer: FP8 tensor cores), checked
by :func:`fp8_device_problem` before a model is loaded. The arithmetic also runs on the CPU
(``torch._scaled_mm`` has a CPU implementation), which is how the CPU test suite checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources

import torch

from virnucpro.models.fast.fp8_rounding import compensated_rounding
from virnucpro.models.kernels.fp8_quantize import quantize_rows_reference
from virnucpro.models.kernels.fp8_rows import E4M3, E4M3_MAX, quantize_rows, row_scale

__all__ = [
    "E4M3_MAX",
    "FP8_MIN_CAPABILITY",
    "Fp8Rounding",
    "Fp8Weight",
    "ROUNDING",
    "quantize_weight",
    "calibration_proteins",
    "quantize_rows",
    "gelu_quantize_rows",
    "fp8_linear",
    "fp8_device_problem",
]

FP8_MIN_CAPABILITY = (8, 9)
FAST_ACCUM = True
"""What ``--precision fp8`` runs with: ``torch._scaled_mm``'s ``use_fast_accum`` (Hopper: the
tensor cores' partial sums are not promoted to full fp32 as often; faster). The benchmark times
and checks both settings (``esm_alone``'s and ``precision``'s FP8 rows). On an H200 (run M1,
``docs/benchmarks.md``) it made the ESM-2 stage 1.557 × bf16 against 1.411 × without, with the
same agreement with fp32 (512 frames: cosine min 0.998032 / median 0.999515 against 0.998035 /
0.999518; labels 100% both): the weights' rounding, not the sums, sets FP8's error."""


class Fp8Rounding(Enum):
    """How a weight's values are rounded to e4m3 at load (both with row-wise scales and the bias
    correction): each to ``NEAREST``, or ``COMPENSATED`` (GPTQ's rule over the calibration
    proteins' inputs, :mod:`~virnucpro.models.fast.fp8_rounding`)."""

    NEAREST = "nearest"
    COMPENSATED = "compensated"


ROUNDING = Fp8Rounding.COMPENSATED
"""What ``--precision fp8`` rounds its weights with (a runner setting, ``fp8_rounding``; the
benchmark's agreement rows measure both)."""


@dataclass(frozen=True, slots=True)
class Fp8Weight:
    """One linear layer in FP8: ``q_t`` is the e4m3 weight transposed (``[in, out]``,
    column-major), ``scale`` its per-output-channel scales ``[1, out]`` fp32, ``bias`` bf16."""

    q_t: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    @property
    def out_features(self) -> int:
        return int(self.q_t.shape[1])


def quantize_weight(weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                    input_mean: torch.Tensor | None = None, gram: torch.Tensor | None = None) -> Fp8Weight:
    """Row-wise e4m3 quantisation of a ``[out, in]`` weight (done once, at load): each value
    rounded to nearest, or with ``gram`` (``[in, in]``, the calibration inputs' ``Σ x xᵀ``) by
    :func:`~virnucpro.models.fast.fp8_rounding.compensated_rounding`. With ``input_mean``
    (``[in]``, the layer's mean input row) the bias absorbs the weight's rounding error at that
    input, ``b + (W - Ŵ)·μ`` in fp32 (a missing bias becomes that correction)."""
    with torch.no_grad():
        if gram is None:
            scale = row_scale(weight)  # [out, 1]
            q = (weight.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        else:
            q, scale = compensated_rounding(weight, gram)
        corrected = None if bias is None else bias.float()
        if input_mean is not None:
            error = weight.float() - q.float() * scale
            shift = error @ input_mean.to(error.device, torch.float32)
            corrected = shift if corrected is None else corrected + shift
        return Fp8Weight(q_t=q.t(), scale=scale.t().contiguous(),
                         bias=None if corrected is None else corrected.to(torch.bfloat16))


@cache
def calibration_proteins() -> tuple[str, ...]:
    """The proteins FP8's bias correction calibrates on: 64 kept frames of a Klebsiella
    pneumoniae genome the benchmark does not sample (``virnucpro/data/fp8_calibration_proteins.txt``,
    made by ``scripts/make_fp8_calibration.py``)."""
    text = resources.files("virnucpro").joinpath("data/fp8_calibration_proteins.txt").read_text()
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))


def gelu_quantize_rows(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fc1's GELU (:func:`~virnucpro.models.kernels.fp8_quantize.fc1_gelu`), then
    :func:`quantize_rows`: what the Triton pass computes, for a GPU without it (compiled)."""
    return quantize_rows_reference(y, gelu=True)


def fp8_linear(q: torch.Tensor, scale: torch.Tensor, weight: Fp8Weight, *,
               fast_accum: bool = False) -> torch.Tensor:
    """``x @ W.T + b`` from quantised rows ``(q, scale)`` of ``x`` and an :class:`Fp8Weight`; bf16
    (``fast_accum``: see :data:`FAST_ACCUM`)."""
    return torch._scaled_mm(q, weight.q_t, scale_a=scale, scale_b=weight.scale, bias=weight.bias,
                            out_dtype=torch.bfloat16, use_fast_accum=fast_accum)


def fp8_device_problem(device: torch.device | str) -> str | None:
    """Why ``device`` cannot run ``--precision fp8`` (None: it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return (f"--precision fp8 needs an NVIDIA GPU with FP8 tensor cores (compute capability "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or newer: L4, L40S, H100, H200); this "
                f"run is on {device.type}. Use --precision auto (fp16 on a GPU, fp32 on the CPU)")
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (f"--precision fp8 needs compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
                f"or newer (FP8 tensor cores); {name} has {capability[0]}.{capability[1]}. Use "
                "--precision bf16 or fp16")
    return None
