"""The compute API of the worker processes: a batch of sequences in, one embedding per sequence out.

The caller forms the batches (token-budgeted, see :mod:`virnucpro.pipeline.batching`, using
``token_lengths``); an embedder pads a batch, runs the encoder once and returns ``[N, dim]``
float32 on the CPU, row *i* for input *i*. A sequence's embedding does not depend on the rest of
its batch (up to float rounding; tested against one-at-a-time).

- DNABERT-S: mean of the last hidden state over ALL tokens, ``[CLS]`` and ``[SEP]`` included
  (REFERENCE.md §4), as a mask-weighted mean.
- ESM-2: last-layer representation averaged over residue positions 1..min(1024, p); proteins
  longer than 1024 residues are truncated as fair-esm's batch converter does with
  ``truncation_seq_length=1024`` (BOS/EOS excluded from the mean).

Two ways to call: ``embed(sequences)`` (synchronous), or ``encode`` once, then
``submit(rows)`` per batch, which queues the GPU work and an asynchronous copy of the result to
pinned host memory and returns at once; ``.result()`` waits. A worker keeps one batch in flight
while it prepares the next, so the GPU never waits for the host between batches.

On CUDA the embedders use the fast path of :mod:`virnucpro.models.fast` (fused q/k/v,
compiled layers in bf16/fp16, no host synchronisation, no attention mask for batches of equal
lengths); on the CPU they run the plain modules, which are the fp32 reference. In bf16/fp16 on
CUDA, batches of both models run packed (no padding): at load time the packed path is checked
against the plain module on a few sequences, and any disagreement or failure turns packing off for
good, with a warning, in favour of the padded path (``.packing`` says which ran and why).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

from virnucpro.config import Precision
from virnucpro.errors import ModelLoadError
from virnucpro.models.fast.compiled import compile_default
from virnucpro.models.fast.dnabert import FastDnabert
from virnucpro.models.fast.esm2 import WARM_DEPTH, FastEsm2
from virnucpro.models.fast.fp8 import FAST_ACCUM, ROUNDING, Fp8Rounding, fp8_device_problem
from virnucpro.models.fast.packing import PackedBatch, pack_rows
from virnucpro.models.kernels.alibi_varlen import triton_alibi_available
from virnucpro.models.reference.dnabert import DnabertS, load_dnabert
from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer
from virnucpro.models.reference.esm2 import Esm2Encoder, load_esm2
from virnucpro.models.reference.weights import torch_dtype

__all__ = [
    "DnabertEmbedder",
    "Esm2Embedder",
    "PendingEmbedding",
    "load_dnabert_embedder",
    "load_esm2_embedder",
    "dnabert_fast_options",
    "esm_fast_options",
    "ESM_MAX_RESIDUES",
]

ESM_MAX_RESIDUES = 1024
PACKED_CHECK_MIN_COSINE = 0.999
"""The packed path must agree with the plain module this well (per-sequence cosine, same dtype)."""
FP8_CHECK_MIN_COSINE = 0.99
"""The FP8 packed path against the plain bf16 module: a check that the kernels work (a broken one
gives cosines near 0), not the precision's agreement, which ``validate-precision`` measures."""

logger = logging.getLogger(__name__)


class PendingEmbedding:
    """An embedding batch being computed; ``result()`` waits and returns ``[N, dim]`` fp32 CPU."""

    def __init__(self, out: torch.Tensor, event: "torch.cuda.Event | None" = None) -> None:
        self._out = out
        self._event = event

    def result(self) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._out


def _pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    tensor = torch.from_numpy(padded)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _to_device(values: Sequence[int], device: torch.device) -> torch.Tensor:
    tensor = torch.tensor(list(values), dtype=torch.long)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _masked_mean(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``keep`` is true, fp32, ``[B, T, D] -> [B, D]``."""
    weights = keep.to(torch.float32).unsqueeze(-1)
    total = (hidden.to(torch.float32) * weights).sum(dim=1)
    return total / weights.sum(dim=1)


def _finish(mean: torch.Tensor) -> PendingEmbedding:
    """Start the copy of ``mean`` to the host; on CUDA it is asynchronous (pinned memory)."""
    if mean.device.type != "cuda":
        return PendingEmbedding(mean.cpu())
    out = torch.empty(mean.shape, dtype=torch.float32, pin_memory=True)
    out.copy_(mean, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return PendingEmbedding(out, event)


def _grad_off(runner: object) -> contextlib.AbstractContextManager:
    """``inference_mode`` for the plain modules; ``no_grad`` for the (compiled) fast path."""
    return torch.inference_mode() if runner is None else torch.no_grad()


def _use_fast(device: torch.device, fast: bool | None) -> bool:
    return device.type == "cuda" if fast is None else fast


def _use_packed_dnabert(runner: FastDnabert | None, packed: bool | None) -> bool:
    """Packed by default where the Triton ALiBi kernel runs (CUDA, bf16/fp16, head size a power
    of two of 16–128; DNABERT-S: 64) and attention runs in the compute dtype."""
    if runner is None:
        return False
    if packed is None:
        head_dim = runner.config.hidden_size // runner.heads
        return (
            runner.device.type == "cuda"
            and runner.dtype in (torch.bfloat16, torch.float16)
            and runner.packable
            and head_dim in (16, 32, 64, 128)
            and triton_alibi_available()
        )
    if packed and not runner.packable:
        raise ValueError("packed DNABERT-S batches run attention in the compute dtype; "
                         "leave attention_dtype unset or use padded batches")
    return packed


def _use_packed(runner: FastEsm2 | None, packed: bool | None) -> bool:
    """Packed by default where flash's variable-length kernel runs: CUDA, bf16/fp16, head
    size a multiple of 8 (ESM-2 3B: 64)."""
    if runner is None:
        return False
    if packed is None:
        head_dim = runner.spec.embed_dim // runner.heads
        return (
            runner.device.type == "cuda"
            and runner.dtype in (torch.bfloat16, torch.float16)
            and head_dim % 8 == 0
            and head_dim <= 256
        )
    return packed


class _PackedMode:
    """Whether an embedder runs packed batches, with the fallback and the load-time self-check.

    A packed call that fails for any reason but running out of memory, or a self-check that
    disagrees with the plain module, switches the embedder to padded batches for good and says
    why (``failed``); the padded path computes the same function.
    """

    def __init__(self, enabled: bool, *, pool_ends: bool = False, required: str | None = None,
                 min_cosine: float = PACKED_CHECK_MIN_COSINE) -> None:
        self.enabled = enabled
        self.min_cosine = min_cosine
        self.pool_ends = pool_ends  # DNABERT-S averages [CLS]/[SEP] too (see pack_rows)
        self.failed: str | None = None
        self.check_cosine: float | None = None
        self.required = required  # why padded batches are no fallback (then turning off is an error)
        if required is not None and not enabled:
            raise ModelLoadError(f"{required}, and packed batches cannot run here")

    def run(self, rows: Sequence[Sequence[int]], device: torch.device,
            embed: Callable[[PackedBatch], torch.Tensor]) -> torch.Tensor | None:
        """The pooled embeddings, or None once packed mode is off (the caller pads instead)."""
        if not self.enabled:
            return None
        try:
            return embed(pack_rows(rows, device, pool_ends=self.pool_ends))
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            self.disable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            return None

    def disable(self, why: str) -> None:
        if self.required is not None:
            raise ModelLoadError(f"{self.required}, and packed batches failed: {why}")
        self.enabled = False
        self.failed = why
        logger.warning("packed batches turned off (%s); using padded batches", why)

    def check(self, packed: torch.Tensor, reference: torch.Tensor) -> None:
        """Compare packed embeddings with the plain module's; turn packing off if they disagree."""
        cosine = _min_cosine(packed, reference)
        self.check_cosine = cosine
        if cosine < self.min_cosine:
            self.disable(f"self-check cosine {cosine:.6f} < {self.min_cosine}")


def _timed_steps(steps: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Run each warm-up step in order; its wall seconds (each step ends synchronised: an
    embedding's ``result()`` waits for the device)."""
    seconds: dict[str, float] = {}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        seconds[name] = round(time.perf_counter() - started, 3)
    return seconds


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest per-row cosine similarity of two ``[N, D]`` matrices (fp64)."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    return float(torch.nn.functional.cosine_similarity(a64, b64, dim=1).min())


_Runner = TypeVar("_Runner", FastDnabert, FastEsm2)


class _Embedder(ABC, Generic[_Runner]):
    """What both embedders do alike: a batch runs packed while packing is on, padded otherwise
    (through the fast runner on CUDA, the plain module on the CPU), and the packed path is
    checked against the plain module."""

    model: DnabertS | Esm2Encoder
    device: torch.device
    runner: _Runner | None
    packing: _PackedMode

    @property
    def packed(self) -> bool:
        """Whether batches run packed (no padding, see :mod:`virnucpro.models.fast.packing`;
        DNABERT-S's ALiBi inside a Triton kernel, :mod:`virnucpro.models.kernels.alibi_varlen`);
        padded batches otherwise (DNABERT-S: with the bias tensor)."""
        return self.packing.enabled

    @property
    def dim(self) -> int:
        return self.model.dim

    @abstractmethod
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token rows, one per input (what :meth:`submit` takes)."""

    @abstractmethod
    def _padded(self, rows: Sequence[Sequence[int]], runner: _Runner | None) -> torch.Tensor:
        """Pooled ``[N, dim]`` of a padded batch, through ``runner`` or the plain module."""

    def submit(self, rows: Sequence[Sequence[int]]) -> PendingEmbedding:
        """Queue one batch of token rows (from :meth:`encode`); returns at once on CUDA."""
        if not rows:
            return PendingEmbedding(torch.empty((0, self.dim), dtype=torch.float32))
        if self.runner is not None:
            mean = self.packing.run(rows, self.device, self.runner.embed_packed)
            if mean is not None:
                return _finish(mean)
        return _finish(self._padded(rows, self.runner))

    def check_packed(self, texts: list[str]) -> None:
        """Packed path against the plain module on ``texts``; packing off if they disagree."""
        if self.packed:
            rows = self.encode(texts)
            self.packing.check(self.submit(rows).result(), self._padded(rows, None).cpu())


class DnabertEmbedder(_Embedder[FastDnabert]):
    """DNABERT-S features: ``embed(dna) -> [N, dim]`` float32 on the CPU."""

    def __init__(
        self,
        model: DnabertS,
        tokenizer: DnaTokenizer,
        *,
        fast: bool | None = None,
        compile: bool | None = None,
        attention_dtype: torch.dtype | None = None,
        residual_dtype: torch.dtype | None = None,
        packed: bool | None = None,
        fused_geglu: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        first = next(model.parameters())
        self.device = first.device
        self.dtype = model.encoder.layer[0].attention.self.Wqkv.weight.dtype
        self.runner: FastDnabert | None = None
        if _use_fast(self.device, fast):
            if compile is None:
                compile = compile_default(self.device, self.dtype)
            self.runner = FastDnabert(
                model, compile=compile, attention_dtype=attention_dtype,
                residual_dtype=residual_dtype,
                fused_geglu=False if packed is False else fused_geglu,  # a packed-path kernel
            )  # fmt: skip
        self.packing = _PackedMode(_use_packed_dnabert(self.runner, packed), pool_ends=True)

    def encode(self, sequences: list[str]) -> list[list[int]]:
        """Token ids per sequence, ``[CLS]`` and ``[SEP]`` included."""
        return self.tokenizer.encode_batch(sequences) if sequences else []

    def token_lengths(self, sequences: list[str]) -> list[int]:
        """Tokens per sequence, ``[CLS]`` and ``[SEP]`` included (the padded-cost unit)."""
        return [len(ids) for ids in self.encode(sequences)]

    def _padded(self, rows: Sequence[Sequence[int]], runner: FastDnabert | None) -> torch.Tensor:
        ids = _pad(rows, self.tokenizer.pad_id, self.device)
        lengths = _to_device([len(r) for r in rows], self.device)
        keep = torch.arange(ids.shape[1], device=self.device)[None, :] < lengths[:, None]
        with _grad_off(runner):
            if runner is not None:
                hidden = runner(ids, keep)
            else:
                hidden = self.model(ids, keep.to(torch.long))
            return _masked_mean(hidden, keep)

    def embed(self, sequences: list[str]) -> torch.Tensor:
        """Mean over all tokens (``[CLS]``/``[SEP]`` included) of the last hidden state."""
        return self.submit(self.encode(sequences)).result()

    def warmup(self, max_tokens: int = 512) -> dict[str, float]:
        """Trigger compilation at load time, on a batch of about ``max_tokens`` tokens.

        The compiled kernels are tuned for the sizes of their first call, so a worker warms up
        with a batch of realistic size. Returns the seconds of each step (:func:`_timed_steps`).
        """
        rng = np.random.default_rng(0)
        n = max(2, max_tokens // 112)
        seqs = ["".join(rng.choice(list("ACGT"), size=int(rng.integers(480, 500)))) for _ in range(n)]
        return _timed_steps({
            "batch": lambda: self.embed(seqs),
            "self-check": lambda: self.check_packed(seqs[:3] + [seqs[3 % n][:40], seqs[4 % n][:300]]),
        })


class Esm2Embedder(_Embedder[FastEsm2]):
    """ESM-2 features: ``embed(proteins) -> [N, dim]`` float32 on the CPU."""

    def __init__(
        self,
        model: Esm2Encoder,
        max_residues: int = ESM_MAX_RESIDUES,
        *,
        fast: bool | None = None,
        compile: bool | None = None,
        residual_dtype: torch.dtype = torch.float32,
        packed: bool | None = None,
        fused_gelu: bool = False,
        fp8: bool = False,
        fp8_fast_accum: bool = False,
        fp8_rounding: Fp8Rounding = Fp8Rounding.NEAREST,
    ) -> None:
        self.model = model
        self.alphabet = model.alphabet
        self.max_residues = max_residues
        first = next(model.parameters())
        self.device = first.device
        self.dtype = model.layers[0].fc1.weight.dtype
        self.runner: FastEsm2 | None = None
        if _use_fast(self.device, fast):
            if compile is None:
                compile = compile_default(self.device, self.dtype)
            self.runner = FastEsm2(
                model, compile=compile, residual_dtype=residual_dtype, max_length=max_residues + 2,
                fused_gelu=fused_gelu, fp8=fp8, fp8_fast_accum=fp8_fast_accum, fp8_rounding=fp8_rounding,
            )  # fmt: skip
        elif fp8:
            raise ValueError("fp8 runs on the fast path only (CUDA)")
        self.packing = _PackedMode(_use_packed(self.runner, packed), required=(
            "--precision fp8 runs on packed batches only (its padded fallback would be bf16, not "
            "the precision asked for); use --precision bf16" if fp8 else None),
            min_cosine=FP8_CHECK_MIN_COSINE if fp8 else PACKED_CHECK_MIN_COSINE)

    def token_lengths(self, proteins: list[str]) -> list[int]:
        """Tokens per protein after truncation, BOS and EOS included."""
        return [min(len(p), self.max_residues) + 2 for p in proteins]

    def encode(self, proteins: list[str]) -> list[list[int]]:
        """``<cls> residues[:1024] <eos>`` per protein; an empty protein is an error."""
        truncated = [p[: self.max_residues] for p in proteins]
        if any(not p for p in truncated):
            raise ValueError("an empty protein has no residues to average; drop it before ESM-2")
        return [self.alphabet.encode(p) for p in truncated]

    def _padded(self, rows: Sequence[Sequence[int]], runner: FastEsm2 | None) -> torch.Tensor:
        lengths = [len(r) for r in rows]
        uniform = min(lengths) == max(lengths)
        tokens = _pad(rows, self.alphabet.padding_idx, self.device)
        position = torch.arange(tokens.shape[1], device=self.device)[None, :]
        if uniform:
            keep = ((position >= 1) & (position <= lengths[0] - 2)).expand(len(rows), -1)
        else:
            residues = _to_device([n - 2 for n in lengths], self.device)
            keep = (position >= 1) & (position <= residues[:, None])
        with _grad_off(runner):
            if runner is not None:
                hidden = runner(tokens, uniform)
            else:
                hidden = self.model(tokens)
            return _masked_mean(hidden, keep)

    def embed(self, proteins: list[str]) -> torch.Tensor:
        """Mean of the last-layer representation over residues 1..min(1024, p)."""
        if not proteins:
            return torch.empty((0, self.dim), dtype=torch.float32)
        return self.submit(self.encode(proteins)).result()

    def warmup(self, max_tokens: int = 512) -> dict[str, float]:
        """Trigger compilation at load time, on batches of about ``max_tokens`` tokens.

        Padded batches: one of equal lengths (no mask), one mixed (the two compiled graphs).
        Packed batches have one graph whatever the lengths: the mixed batch alone, through the
        first layers only (:meth:`_warm_batch`). The compiled kernels are tuned for the sizes of
        their first call, and cuBLAS picks its kernels by the GEMMs' sizes, so a worker warms up
        with batches of realistic size. Returns the seconds of each step (:func:`_timed_steps`).
        """
        rng = np.random.default_rng(0)
        residues = list("ACDEFGHIKLMNPQRSTVWY")
        n = max(2, max_tokens // 168)
        same = ["".join(rng.choice(residues, size=166)) for _ in range(n)]
        mixed = same[: n - n // 4] + ["".join(rng.choice(residues, size=150)) for _ in range(n // 4)]
        steps: dict[str, Callable[[], object]] = {}
        if not self.packed:
            steps["equal-length batch"] = lambda: self.embed(same)
        steps["batch"] = lambda: self._warm_batch(mixed)
        steps["self-check"] = lambda: self.check_packed(mixed[-3:] + same[:2] + [same[2 % n][:40]])
        return _timed_steps(steps)

    def _warm_batch(self, proteins: list[str]) -> torch.Tensor:
        """The warm-up batch: packed, through the first :data:`~virnucpro.models.fast.esm2.WARM_DEPTH`
        layers only (every kernel of a whole forward, at the batch's sizes, for a fraction of its
        arithmetic); a padded batch runs whole (its compiled layer is sized by that call)."""
        rows = self.encode(proteins)
        runner = self.runner
        if runner is not None:
            mean = self.packing.run(rows, self.device, lambda batch: runner.embed_packed(batch, depth=WARM_DEPTH))
            if mean is not None:
                return _finish(mean).result()
        return self.submit(rows).result()


def load_dnabert_embedder(
    path: Path,
    device: torch.device,
    precision: Precision = Precision.FP32,
    *,
    compile: bool | None = None,
) -> DnabertEmbedder:
    """Load DNABERT-S from its directory onto ``device`` at ``precision``.

    ``compile``: None = compile on CUDA in bf16/fp16 (see
    :func:`~virnucpro.models.fast.compiled.compile_default`). On CUDA the fast path's options
    follow the precision (:func:`dnabert_fast_options`).
    """
    device = torch.device(device)
    model, tokenizer = load_dnabert(Path(path), device, torch_dtype(precision))
    options = dnabert_fast_options(precision) if device.type == "cuda" else {}
    return DnabertEmbedder(model, tokenizer, compile=compile, **options)


def load_esm2_embedder(
    path: Path,
    device: torch.device,
    precision: Precision = Precision.FP32,
    *,
    compile: bool | None = None,
) -> Esm2Embedder:
    """Load ESM-2 from a fair-esm checkpoint file onto ``device`` at ``precision``.

    On CUDA the fast path's options follow the precision (:func:`esm_fast_options`).
    """
    device = torch.device(device)
    if precision is Precision.FP8 and (problem := fp8_device_problem(device)):
        raise ModelLoadError(problem)  # before 5.7 GB are read
    model = load_esm2(Path(path), device, torch_dtype(precision))
    options = esm_fast_options(precision) if device.type == "cuda" else {}
    return Esm2Embedder(model, compile=compile, **options)


def dnabert_fast_options(precision: Precision) -> dict[str, object]:
    """The DNABERT-S fast path's settings for a precision (measured in ``docs/benchmarks.md``).

    - fp32 (the GPU default) and fp16: the plain module's fp32 residual stream and layer norms.
    - bf16: residual stream and layer norms in bf16 (as ESM-2's bf16 option); agreement with
      fp32 reported by the benchmark and by ``virnucpro validate-precision``.
    """
    if precision in (Precision.BF16, Precision.FP8):  # fp8 is ESM-2's only: DNABERT-S runs bf16
        return {"residual_dtype": torch.bfloat16}
    return {}


def esm_fast_options(precision: Precision) -> dict[str, object]:
    """The ESM-2 fast path's settings for a precision (measured in ``docs/benchmarks.md``).

    - fp32 (the GPU default): the exact function — fp32 residual stream, erf GELU.
    - bf16: residual stream in bf16 (the layer norms still compute in fp32) and fc1's bias +
      GELU fused into the GEMM (cuBLASLt epilogue, tanh GELU): 7% faster than the exact function
      in bf16 (99.2k → 106.1k tokens/s on an H200, ``docs/benchmarks.md`` run D4); agreement
      with fp32 reported per option there and by ``virnucpro validate-precision``.
    - fp16: the fused GELU only (an fp16 residual stream could overflow).
    - fp8 (opt-in, compute capability >= 8.9): bf16 as above, with the four GEMMs of each layer
      in FP8 e4m3 (:mod:`~virnucpro.models.fast.fp8`); fc1's GELU in the tanh form, as bf16's,
      inside the pass that quantises its output.
    """
    if precision is Precision.BF16:
        return {"residual_dtype": torch.bfloat16, "fused_gelu": True}
    if precision is Precision.FP8:
        return {"residual_dtype": torch.bfloat16, "fp8": True, "fp8_fast_accum": FAST_ACCUM,
                "fp8_rounding": ROUNDING}
    if precision is Precision.FP16:
        return {"fused_gelu": True}
    return {}
