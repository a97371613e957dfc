"""Where ESM-2's time goes per kernel, what FP8 GEMM recipes cost, and where FP8's error comes from.

    python bench/probe_fp8.py --out $OUT/probe [--tokens 131072] [--frames 256]
        [--parts quant,passes,gemms,kernels,dnabert,error] [--modes bf16,fp8,fp16]

Parts, each on the benchmark's random weights (seed 0; ESM-2 3B unless ``--small``):

- ``quant``: FP8's row quantisation (the Triton pass at several launch settings, inductor's
  compiled version) at ``--tokens`` rows, 10,240 (with GELU) and 2,560 wide.
- ``passes``: the packed path's rotary and add+norm Triton passes at other launch settings.
- ``gemms``: ESM-2 3B's four GEMM shapes at ``--tokens`` rows in bf16 and in FP8 with
  ``torch._scaled_mm``'s recipes (per tensor, row-wise with and without bias, fast accumulation,
  DeepSeek-style 1x128 x 128x128 blocks), TFLOP/s each.
- ``kernels``: one packed batch of ``--tokens`` tokens through the fast path at each of
  ``--modes``; its rate, then a CUDA profile of two forwards with the GPU time per kernel
  (``kernels.txt``, and a summary by kind of kernel).
- ``dnabert``: DNABERT-S's GPU time per kernel on one packed batch of 100k tokens of real chunks
  (fp16 with the fp32 residual, and bf16).
- ``error``: an fp32 ESM-2 3B on ``--frames`` real frames, with the GEMMs' operands rounded to
  e4m3 in several ways (emulated: quantise, dequantise, fp32 GEMM; with and without the bias
  correction), and the real FP8 kernels: the embedding cosine against exact fp32 for each.

Writes ``probe.md`` (every table) and ``probe.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
SHAPES = {"qkv": (2560, 7680), "out": (2560, 2560), "fc1": (2560, 10240), "fc2": (10240, 2560)}
"""ESM-2 3B's GEMMs: (in, out) features."""


def proteins(n: int, seed: int) -> list[str]:
    """``n`` random proteins shaped like the 500-bp sample's frames (57% of 166 residues, the
    rest 40-165)."""
    g = torch.Generator().manual_seed(seed)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    out = []
    for i in range(n):
        length = 166 if torch.rand((), generator=g) < 0.57 else int(torch.randint(40, 166, (), generator=g))
        idx = torch.randint(0, len(letters), (length,), generator=g).tolist()
        out.append("".join(letters[j] for j in idx))
    return out


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Seconds per call (CUDA events), after one call."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeat


def kind_of(name: str) -> str:
    n = name.lower()
    if "flash" in n or "fmha" in n or "attention" in n:
        return "attention"
    if "gemm" in n or "sm90" in n or "cutlass" in n or "wgmma" in n or "matmul" in n or "nvjet" in n:
        return "gemm"
    if "triton" in n:
        return "triton"
    return "other"


def kernel_profile(fn: Callable[[], Any], steps: int) -> list[tuple[str, float, int]]:
    """(kernel name, GPU ms per forward, calls per forward), most time first."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if t > 0:
            rows.append((e.key, t / 1000 / steps, e.count // steps))
    rows.sort(key=lambda r: -r[1])
    return rows


def part_kernels(args: argparse.Namespace, model: Any, report: dict, lines: list[str]) -> None:
    from virnucpro.config import Precision
    from virnucpro.models.embedders import Esm2Embedder, esm_fast_options
    from virnucpro.models.fast.packing import pack_rows

    prots = []
    total = 0
    for p in proteins(4000, 1):
        if total + len(p) + 2 > args.tokens:
            break
        prots.append(p)
        total += len(p) + 2
    lines.append(f"## Kernels: one packed batch, {len(prots)} proteins, {total} tokens\n")
    modes = [(m, Precision(m)) for m in args.modes.split(",")]
    for name, precision in modes:
        if name == "fp16":  # last: the fp16 weights replace the bf16 ones (norms stay as loaded)
            for param in model.parameters():
                if param.dtype == torch.bfloat16:
                    param.data = param.data.half()
        embedder = Esm2Embedder(model, fast=True, **esm_fast_options(precision))
        embedder.warmup(8192)
        batch = pack_rows(embedder.encode(prots), embedder.device)
        runner = embedder.runner
        forward = lambda: runner.forward_packed(batch)  # noqa: E731
        seconds = timed(forward, 3)
        rows = kernel_profile(forward, 2)
        gpu_ms = sum(r[1] for r in rows)
        kinds: dict[str, float] = {}
        for k, ms, _ in rows:
            kinds[kind_of(k)] = kinds.get(kind_of(k), 0.0) + ms
        report.setdefault("kernels", {})[name] = {
            "tokens_per_s": total / seconds, "forward_ms": seconds * 1000, "gpu_ms": gpu_ms, "kinds": kinds,
            "top": rows[:30]}
        lines.append(f"### {name}: {total / seconds:,.0f} tokens/s, forward {seconds * 1000:.1f} ms, "
                     f"kernels {gpu_ms:.1f} ms\n")
        lines.append("| kind | ms | share |\n|---|---:|---:|")
        for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {ms:.1f} | {ms / gpu_ms:.1%} |")
        lines.append("\n| kernel | ms | calls | share |\n|---|---:|---:|---:|")
        for k, ms, calls in rows[:22]:
            lines.append(f"| `{k[:110]}` | {ms:.2f} | {calls} | {ms / gpu_ms:.1%} |")
        lines.append("")
        with open(args.out / "kernels.txt", "a") as handle:
            handle.write(f"== {name}\n" + "\n".join(f"{ms:10.3f} ms {calls:5d}  {k[:160]}" for k, ms, calls in rows)
                         + "\n")
        del embedder, runner, batch
        torch.cuda.empty_cache()


def part_quant(args: argparse.Namespace, report: dict, lines: list[str]) -> None:
    """The FP8 path's row quantisation (the Triton pass, launch settings) against inductor's."""
    from virnucpro.models.fast.fp8 import gelu_quantize_rows, quantize_rows
    from virnucpro.models.kernels.fp8_quantize import quantize_rows_fused

    lines.append(f"## Row quantisation at {args.tokens} rows (GB/s of bf16 read + e4m3 written)\n")
    lines.append("| pass | width | ms | GB/s |\n|---|---:|---:|---:|")
    for width, gelu in ((10240, True), (2560, False)):
        x = torch.randn(args.tokens, width, device="cuda", dtype=torch.bfloat16)
        moved = x.numel() * 3
        compiled = torch.compile(gelu_quantize_rows if gelu else quantize_rows, dynamic=False)
        candidates = [("inductor (the code before)", lambda: compiled(x))]
        candidates.append(("triton, the code's settings", lambda: quantize_rows_fused(x, gelu=gelu)))
        for warps in (4, 8, 16):
            candidates.append((f"triton, {warps} warps", lambda w=warps: quantize_rows_fused(x, gelu=gelu, warps=w)))
        for label, fn in candidates:
            s = timed(fn, 10)
            report.setdefault("quant", {})[f"{width} {label}"] = s * 1000
            lines.append(f"| {label} | {width} | {s * 1000:.3f} | {moved / s / 1e9:.0f} |")
        del x
    lines.append("")


def part_passes(args: argparse.Namespace, report: dict, lines: list[str]) -> None:
    """The memory-bound Triton passes of the packed path (rotary, add+norm) at other launch
    settings than the code's, GB/s each: is there time left in them?"""
    import triton

    from virnucpro.models.kernels import add_norm, rotary
    from virnucpro.models.kernels.fp8_rows import E4M3_MAX as QMAX, MIN_SCALE

    n, heads, hd = args.tokens, 40, 64
    d = heads * hd
    lines.append(f"## Rotary and add+norm at {n} rows, other launch settings (GB/s moved)\n")
    lines.append("| pass | settings | ms | GB/s |\n|---|---|---:|---:|")
    qkv = torch.randn(n, 3, heads, hd, device="cuda", dtype=torch.bfloat16)
    cos = torch.randn(n, 1, hd, device="cuda", dtype=torch.bfloat16)
    sin = torch.randn(n, 1, hd, device="cuda", dtype=torch.bfloat16)
    q = torch.empty(n, heads, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.empty_like(q)
    kernel = rotary._KERNEL.kernel()
    for rows, cols, warps in ((16, 256, 4), (32, 256, 4), (64, 256, 8), (16, 512, 4), (32, 512, 8), (8, 1024, 4),
                              (64, 128, 4), (128, 64, 4)):
        grid = (-(-n // rows), -(-(d // 2) // cols))
        fn = lambda g=grid, r=rows, c=cols, w=warps: kernel[g](qkv, cos, sin, q, k, n, 0.125, D=d, HD=hd, ROWS=r,  # noqa: E731
                                                               COLS=c, num_warps=w)
        sec = timed(fn, 10)
        lines.append(f"| rotary | {rows} rows x {cols} cols, {warps} warps{' (the code)' if (rows, cols, warps) == (16, 256, 4) else ''} "
                     f"| {sec * 1000:.3f} | {n * d * 2 * 2 * 2 / sec / 1e9:.0f} |")
    del qkv, cos, sin, q, k
    norm = add_norm._KERNEL.kernel()
    for residual in (torch.bfloat16, torch.float32):
        x = torch.randn(n, d, device="cuda", dtype=residual)
        y = torch.randn(n, d, device="cuda", dtype=torch.bfloat16)
        w = torch.ones(d, device="cuda")
        b = torch.zeros(d, device="cuda")
        for quant in (False, True):
            h = torch.empty(n, d, device="cuda", dtype=torch.float8_e4m3fn if quant else torch.bfloat16)
            scale = torch.empty(n, 1, device="cuda") if quant else h
            moved = n * d * (2 * x.element_size() + 2 + h.element_size())
            for warps in (4, 8, 16):
                fn = lambda wp=warps, hh=h, sc=scale, qq=quant: norm[(n,)](  # noqa: E731
                    x, y, w, b, hh, sc, d, 1e-5, QMAX, MIN_SCALE, BLOCK=triton.next_power_of_2(d), num_warps=wp,
                    STORE_SUM=True, QUANT=qq)
                sec = timed(fn, 10)
                lines.append(f"| add+norm, residual {str(residual)[6:]}, {'e4m3' if quant else 'bf16'} out | "
                             f"{warps} warps{' (the code)' if warps == 8 else ''} | {sec * 1000:.3f} | {moved / sec / 1e9:.0f} |")
        del x, y
    lines.append("")
    torch.cuda.empty_cache()


def part_dnabert(args: argparse.Namespace, report: dict, lines: list[str]) -> None:
    """DNABERT-S's GPU time per kernel on one packed batch of the benchmark's real 500-bp chunks,
    at the default precision (fp16, fp32 residual) and bf16."""
    from virnucpro.config import Precision
    from virnucpro.models.embedders import DnabertEmbedder, dnabert_fast_options
    from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert
    from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer

    from bench.sample import frames_of, make_sample

    dna = [f.dna for f in frames_of(make_sample(3000, seed=5), 500)]
    tokenizer = DnaTokenizer.from_model_dir(Path("/nonexistent"))
    for name, precision, dtype in (("fp16", Precision.FP16, torch.float16), ("bf16", Precision.BF16, torch.bfloat16)):
        model = build_random_dnabert(DnabertConfig(), torch.device("cuda"), dtype, seed=0)
        embedder = DnabertEmbedder(model, tokenizer, fast=True, **dnabert_fast_options(precision))
        embedder.warmup(8192)
        rows = embedder.encode(dna)
        group, total = [], 0
        for r in rows:
            if total + len(r) > 100_000:
                break
            group.append(r)
            total += len(r)
        forward = lambda g=group: embedder.submit(g).result()  # noqa: E731
        seconds = timed(forward, 5)
        prof = kernel_profile(forward, 3)
        gpu_ms = sum(r[1] for r in prof)
        flops = 2 * sum(p.numel() for p in model.parameters()) * total
        lines.append(f"## DNABERT-S {name}: {len(group)} chunks, {total} tokens; {total / seconds:,.0f} tokens/s, "
                     f"call {seconds * 1000:.1f} ms, kernels {gpu_ms:.1f} ms (~{flops / seconds / 1e12:.0f} TFLOP/s "
                     "counting 2 x parameters per token)\n")
        lines.append("| kernel | ms | calls | share |\n|---|---:|---:|---:|")
        for k, ms, calls in prof[:14]:
            lines.append(f"| `{k[:110]}` | {ms:.2f} | {calls} | {ms / gpu_ms:.1%} |")
        lines.append("")
        report.setdefault("dnabert", {})[name] = {"tokens_per_s": total / seconds, "gpu_ms": gpu_ms, "top": prof[:20]}
        del embedder, model
        torch.cuda.empty_cache()


def block_scale_rows(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    xs = x.float().view(m, k // block, block)
    s = (xs.abs().amax(-1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
    return (xs / s).to(E4M3).view(m, k), s.view(m, k // block)


def part_gemms(args: argparse.Namespace, report: dict, lines: list[str]) -> None:
    m = args.tokens
    dev = torch.device("cuda")
    lines.append(f"## GEMMs at M = {m} (TFLOP/s)\n")
    lines.append("| recipe | " + " | ".join(SHAPES) + " | mix (time-weighted) |\n|---|" + "---:|" * (len(SHAPES) + 1))
    results: dict[str, dict[str, Any]] = {}

    def record(recipe: str, shape: str, fn: Callable[[], Any] | None, err: str | None = None) -> None:
        k, n = SHAPES[shape]
        if fn is None:
            results.setdefault(recipe, {})[shape] = err
            return
        try:
            s = timed(fn, 10)
            results.setdefault(recipe, {})[shape] = 2 * m * k * n / s / 1e12
        except Exception as e:  # noqa: BLE001 - a recipe this torch lacks is a row of its own
            results.setdefault(recipe, {})[shape] = f"{type(e).__name__}: {str(e)[:160]}"

    for shape, (k, n) in SHAPES.items():
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * k**-0.5
        b = torch.randn(n, device=dev, dtype=torch.bfloat16)
        record("bf16 F.linear + bias", shape, lambda: F.linear(x, w, b))
        xq, wq = x.to(E4M3), w.to(E4M3)
        one = torch.ones((), device=dev)
        record("fp8 per tensor", shape, lambda: torch._scaled_mm(xq, wq.t(), scale_a=one, scale_b=one,
                                                                 out_dtype=torch.bfloat16))
        sa = torch.rand(m, 1, device=dev) + 0.5
        sb = torch.rand(1, n, device=dev) + 0.5
        record("fp8 row-wise + bias", shape, lambda: torch._scaled_mm(xq, wq.t(), scale_a=sa, scale_b=sb, bias=b,
                                                                      out_dtype=torch.bfloat16))
        record("fp8 row-wise", shape, lambda: torch._scaled_mm(xq, wq.t(), scale_a=sa, scale_b=sb,
                                                               out_dtype=torch.bfloat16))
        record("fp8 row-wise, fast accum", shape, lambda: torch._scaled_mm(
            xq, wq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=True))
        # DeepSeek-style: A 1x128 blocks [M, K/128] (outer-dim-major: stride (1, M)), B 128x128 [N/128, K/128]
        xb, sxa = block_scale_rows(x, 128)
        sa_t = sxa.t().contiguous().t()
        sw = torch.rand(k // 128, n // 128, device=dev) + 0.5
        for label, a_scale, b_scale in (
            ("fp8 blocks 1x128 x 128x128 (A scales M-major, B [K/128, N/128])", sa_t, sw),
            ("fp8 blocks 1x128 x 128x128 (A scales K-major, B [K/128, N/128])", sxa, sw),
            ("fp8 blocks 1x128 x 128x128 (A scales M-major, B [N/128, K/128]^T)", sa_t, sw.t().contiguous().t()),
        ):
            record(label, shape, lambda a_scale=a_scale, b_scale=b_scale: torch._scaled_mm(
                xb, wq.t(), scale_a=a_scale, scale_b=b_scale, out_dtype=torch.bfloat16))
        # correctness of the block recipe that ran, against dequantised fp32 (first shape only)
        if shape == "fc2":
            ok = [r for r in results if r.startswith("fp8 blocks") and not isinstance(results[r].get(shape), str)]
            for recipe in ok:
                a_scale = sa_t if "A scales M-major" in recipe else sxa
                b_scale = sw if "B [K/128" in recipe else sw.t().contiguous().t()
                got = torch._scaled_mm(xb[:256], wq.t(), scale_a=a_scale[:256].contiguous() if a_scale is sxa
                                       else a_scale[:256].t().contiguous().t(),
                                       scale_b=b_scale, out_dtype=torch.float32)
                want = (xb[:256].float().view(256, k // 128, 128) * sxa[:256, :, None]).view(256, k) @ (
                    wq.float().view(n // 128, 128, k // 128, 128) * sw.t()[:, None, :, None]).view(n, k).t()
                rel = float((got - want).norm() / want.norm())
                report.setdefault("block_check", {})[recipe] = rel
                lines.append(f"- block recipe check ({recipe}): relative error vs dequantised fp32 {rel:.2e}")
        del x, w, xq, wq
        torch.cuda.empty_cache()
    flops = {s: k * n for s, (k, n) in SHAPES.items()}
    for recipe, per in results.items():
        cells, ok = [], all(isinstance(v, float) for v in per.values())
        for s in SHAPES:
            v = per.get(s)
            cells.append(f"{v:.0f}" if isinstance(v, float) else f"({v})")
        mix = sum(flops.values()) / sum(flops[s] / per[s] for s in SHAPES) if ok else float("nan")
        lines.append(f"| {recipe} | " + " | ".join(cells) + f" | {mix:.0f} |")
    report["gemms"] = results
    lines.append("")


def fake_quant(x: torch.Tensor, block: int | None) -> torch.Tensor:
    """``x [..., K]`` rounded to e4m3 with one scale per row (``block`` None) or per ``block`` values."""
    shape = x.shape
    k = shape[-1]
    xs = x.float().reshape(-1, 1 if block is None else k // block, k if block is None else block)
    s = (xs.abs().amax(-1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
    return ((xs / s).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).float() * s).reshape(shape)


def fake_quant_weight(w: torch.Tensor, block: bool) -> torch.Tensor:
    if not block:
        return fake_quant(w, None)
    n, k = w.shape
    ws = w.float().view(n // 128, 128, k // 128, 128)
    s = (ws.abs().amax(dim=(1, 3), keepdim=True) / E4M3_MAX).clamp(min=1e-12)
    return ((ws / s).to(E4M3).float() * s).view(n, k)


class FakeFp8Linear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, act_block: int | None, weight_block: bool,
                 quant_act: bool = True, quant_weight: bool = True, input_mean: torch.Tensor | None = None,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight is not None:  # rounded elsewhere (dequantised)
            w = weight
        else:
            w = fake_quant_weight(linear.weight.data, weight_block) if quant_weight else linear.weight.data
        b = linear.bias.data
        if input_mean is not None:  # bias correction: the weights' rounding error at the mean input
            b = b + (linear.weight.data.float() - w) @ input_mean
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)
        self.act_block = act_block
        self.quant_act = quant_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quant(x, self.act_block) if self.quant_act else x.float(), self.weight, self.bias)


def real_proteins(n: int) -> list[str]:
    """``n`` kept frames' proteins from the benchmark's real genomes (500-bp chunks)."""
    from bench.sample import frames_of, make_sample

    return [f.protein for f in frames_of(make_sample(max(50, n), seed=5), 500)][:n]


def example_proteins(n: int) -> list[str]:
    """The first ``n`` kept frames' proteins of the bundled example input (``examples/example.fa.gz``)."""
    from bench.sample import frames_of, read_genome

    return [f.protein for f in frames_of(read_genome(ROOT / "examples" / "example.fa.gz"), 500)][:n]


def calibration_proteins(count: int) -> list[str]:
    """``count`` frames picked as ``--precision fp8``'s calibration set is (``scripts/make_fp8_calibration.py``)."""
    from scripts.make_fp8_calibration import pick_proteins

    genome = next(g for g in (ROOT.parent / "shared", ROOT / "shared") if g.is_dir()) / "data" / "real" / "Klebs_Kp1084.fna.xz"
    return pick_proteins(genome, count)[1]


def input_means(model: Any, prots: list[str], dev: torch.device,
                grams: dict[tuple[int, str], torch.Tensor] | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """Each GEMM's mean input row over the residues of ``prots`` (exact fp32 forward, padding left
    out): ``{(layer, "qkv" | "out" | "fc1" | "fc2"): [K]}``; with ``grams``, each input's
    ``Σ x xᵀ`` is summed into it as well."""
    alphabet = model.alphabet
    sums: dict[tuple[int, str], torch.Tensor] = {}
    count = [0]
    keep: list[torch.Tensor] = []
    hooks = []
    for i, layer in enumerate(model.layers):
        for group, mod in (("qkv", layer.self_attn.q_proj), ("out", layer.self_attn.out_proj),
                           ("fc1", layer.fc1), ("fc2", layer.fc2)):
            def hook(_m: Any, inputs: tuple, _o: Any, key: tuple = (i, group)) -> None:
                x = inputs[0].float()
                mask = keep[0]
                sums[key] = sums.get(key, 0) + (x * mask[..., None]).sum(dim=(0, 1))
                if grams is not None:
                    rows = x[mask.bool()]
                    grams[key] = grams.get(key, 0) + rows.T @ rows
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for lo in range(0, len(prots), 32):
            rows = [alphabet.encode(p) for p in prots[lo : lo + 32]]
            width = max(map(len, rows))
            tokens = torch.full((len(rows), width), alphabet.padding_idx, dtype=torch.long)
            for j, r in enumerate(rows):
                tokens[j, : len(r)] = torch.tensor(r)
            keep[:] = [tokens.ne(alphabet.padding_idx).float().to(dev)]
            count[0] += int(keep[0].sum())
            model(tokens.to(dev))
    for h in hooks:
        h.remove()
    return {k: v / count[0] for k, v in sums.items()}


def part_error(args: argparse.Namespace, report: dict, lines: list[str], flush: Callable[[], None]) -> None:
    from virnucpro.models.reference.esm2 import build_random_esm2

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
    spec = model_spec(args)
    model = build_random_esm2(spec, dev, torch.float32, seed=0).eval()
    last = spec.num_layers
    prots = real_proteins(args.frames)  # the benchmark's real genomes, as the precision rows
    alphabet = model.alphabet

    def embed() -> torch.Tensor:
        out = []
        with torch.no_grad():
            for lo in range(0, len(prots), 32):
                group = prots[lo : lo + 32]
                rows = [alphabet.encode(p) for p in group]
                width = max(map(len, rows))
                tokens = torch.full((len(rows), width), alphabet.padding_idx, dtype=torch.long)
                for i, r in enumerate(rows):
                    tokens[i, : len(r)] = torch.tensor(r)
                hidden = model(tokens.to(dev))
                for i, p in enumerate(group):
                    out.append(hidden[i, 1 : len(p) + 1].mean(0))
        return torch.stack(out)

    if args.error_set == "rounding":
        part_error_rounding(args, model, prots, embed, report, lines, flush)
        return
    # the means come from other proteins than the test set's: random letters, or the bundled example's frames
    means_random = input_means(model, proteins(64, 3), dev)
    means = input_means(model, example_proteins(64), dev)
    exact = embed()
    originals = {}
    for i, layer in enumerate(model.layers):
        a = layer.self_attn
        originals[i] = {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "out": a.out_proj, "fc1": layer.fc1,
                        "fc2": layer.fc2}

    def install(which: Callable[[int, str], dict | None]) -> None:
        cache: dict = {}
        for i, layer in enumerate(model.layers):
            a = layer.self_attn
            for name, lin in originals[i].items():
                group = "qkv" if name in "qkv" else name
                opts = which(i, group)
                if opts is not None and opts.get("input_mean") is not None:
                    opts = {**opts, "input_mean": (means if opts["input_mean"] == "example" else means_random)[(i, group)]}
                mod = lin if opts is None else FakeFp8Linear(lin, **opts)
                cache[name] = mod
            a.q_proj, a.k_proj, a.v_proj, a.out_proj = cache["q"], cache["k"], cache["v"], cache["out"]
            layer.fc1, layer.fc2 = cache["fc1"], cache["fc2"]

    row = {"act_block": None, "weight_block": False}
    blk = {"act_block": 128, "weight_block": True}
    variants: list[tuple[str, Callable[[int, str], dict | None]]] = [
        ("all four GEMMs, row-wise scales (the current --precision fp8)", lambda i, g: row),
        ("all four, row-wise, bias-corrected at the mean input of 64 example frames",
         lambda i, g: {**row, "input_mean": "example"}),
        ("all four, row-wise, bias-corrected at the mean input of 64 random-letter proteins",
         lambda i, g: {**row, "input_mean": "random"}),
        ("all four, weights only in e4m3, bias-corrected (example frames)",
         lambda i, g: {**row, "quant_act": False, "input_mean": "example"}),
        ("all four, 1x128 activation / 128x128 weight blocks", lambda i, g: blk),
        ("all four, 1x32 activation / 128x128 weight blocks", lambda i, g: {"act_block": 32, "weight_block": True}),
        ("all four, weights only in e4m3 (activations exact)", lambda i, g: {**row, "quant_act": False}),
        ("all four, activations only in e4m3 (weights exact)", lambda i, g: {**row, "quant_weight": False}),
        ("q/k/v exact, the rest row-wise", lambda i, g: None if g == "qkv" else row),
        ("out-proj exact, the rest row-wise", lambda i, g: None if g == "out" else row),
        ("fc1 exact, the rest row-wise", lambda i, g: None if g == "fc1" else row),
        ("fc2 exact, the rest row-wise", lambda i, g: None if g == "fc2" else row),
        ("fc2's input in 1x128 blocks, the rest row-wise (fused fc1 epilogue plan)",
         lambda i, g: {"act_block": 128, "weight_block": True} if g == "fc2" else row),
        ("first 2 and last 2 layers exact, the rest row-wise", lambda i, g: None if i < 2 or i >= last - 2 else row),
        ("first 6 and last 6 layers exact, the rest row-wise", lambda i, g: None if i < 6 or i >= last - 6 else row),
    ]
    lines.append(f"## FP8 error, emulated (fp32 ESM-2 3B, {len(prots)} proteins; cosine of the mean embedding "
                 "against exact fp32)\n")
    lines.append("| variant | cosine min | median | mean 1-cos |\n|---|---:|---:|---:|")
    for name, which in variants:
        install(which)
        got = embed()
        cos = F.cosine_similarity(got, exact, dim=-1)
        report.setdefault("error", {})[name] = {"min": float(cos.min()), "median": float(cos.median()),
                                                "mean_1_minus": float((1 - cos).mean())}
        lines.append(f"| {name} | {float(cos.min()):.6f} | {float(cos.median()):.6f} | "
                     f"{float((1 - cos).mean()):.2e} |")
        install(lambda i, g: None)
        torch.cuda.empty_cache()
    flush()
    if dev.type != "cuda":  # the real FP8 kernels need a GPU
        return
    # the real FP8 path on the same proteins (bf16 weights from the same fp32 ones)
    from virnucpro.config import Precision
    from virnucpro.models.embedders import Esm2Embedder, esm_fast_options

    from virnucpro.models.fast.fp8 import quantize_weight

    del model
    torch.cuda.empty_cache()
    model = build_random_esm2(spec, dev, torch.bfloat16, seed=0).eval()  # norms as the loader keeps them
    embedder = Esm2Embedder(model, fast=True, **esm_fast_options(Precision.FP8))
    for label, correct in (("real `--precision fp8` kernels, bias-corrected (bf16 residual, attention)", True),
                           ("real `--precision fp8` kernels without the correction", False)):
        if not correct:
            runner = embedder.runner
            runner.fp8_weights = [tuple(quantize_weight(a[i], a[i + 1]) for i in (2, 4, 8, 10))
                                  for a in runner.layer_args]
        real = embedder.embed(prots).to(dev)
        cos = F.cosine_similarity(real, exact, dim=-1)
        report["error"][label] = {"min": float(cos.min()), "median": float(cos.median())}
        lines.append(f"| {label} | {float(cos.min()):.6f} | {float(cos.median()):.6f} | "
                     f"{float((1 - cos).mean()):.2e} |")
    embedder = Esm2Embedder(model, fast=True, **esm_fast_options(Precision.BF16))
    real = embedder.embed(prots).to(dev)
    cos = F.cosine_similarity(real, exact, dim=-1)
    lines.append(f"| real bf16 path, for scale | {float(cos.min()):.6f} | {float(cos.median()):.6f} | "
                 f"{float((1 - cos).mean()):.2e} |")
    lines.append("")
    del model, embedder
    torch.cuda.empty_cache()


def _install_weights(model: Any, weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] | None,
                     quant_act: bool = True) -> None:
    """Each linear replaced by a :class:`FakeFp8Linear` with the given (dequantised weight, bias);
    None: the model's own linears back."""
    for i, layer in enumerate(model.layers):
        a = layer.self_attn
        names = ("q_proj", "k_proj", "v_proj", "out_proj")
        mods = [getattr(a, n) for n in names] + [layer.fc1, layer.fc2]
        mods = [getattr(m, "original", m) for m in mods]
        if weights is not None:
            new = []
            for name, m in zip((*names, "fc1", "fc2"), mods):
                w, b = weights[(i, name)]
                fake = FakeFp8Linear(m, None, False, quant_act=quant_act, weight=w)
                fake.bias = b
                fake.original = m
                new.append(fake)
            mods = new
        a.q_proj, a.k_proj, a.v_proj, a.out_proj, layer.fc1, layer.fc2 = mods


def rounded_weights(model: Any, prots: list[str], dev: torch.device, *, damp: float | None,
                    ) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """Every linear's weight rounded to e4m3 (row-wise scales) to nearest (``damp`` None) or by
    GPTQ's rule (:func:`virnucpro.models.fast.fp8_rounding.compensated_rounding`) over the inputs
    of ``prots``, and its bias corrected at their mean input: ``{(layer, name): (Ŵ, b')}``."""
    from virnucpro.models.fast.fp8_rounding import compensated_rounding

    grams: dict[tuple[int, str], torch.Tensor] = {}
    means = input_means(model, prots, dev, grams if damp is not None else None)
    out = {}
    for i, layer in enumerate(model.layers):
        a = layer.self_attn
        for name, m in (("q_proj", a.q_proj), ("k_proj", a.k_proj), ("v_proj", a.v_proj),
                        ("out_proj", a.out_proj), ("fc1", layer.fc1), ("fc2", layer.fc2)):
            group = "qkv" if name in ("q_proj", "k_proj", "v_proj") else name.replace("_proj", "")
            w = m.weight.data.float()
            if damp is None:
                back = fake_quant(w, None)
            else:
                q, scale = compensated_rounding(w, grams[(i, group)], damp=damp)
                back = q.float() * scale
            out[(i, name)] = (back, m.bias.data.float() + (w - back) @ means[(i, group)])
        for group in ("qkv", "out", "fc1", "fc2"):
            grams.pop((i, group), None)
    return out


def part_error_rounding(args: argparse.Namespace, model: Any, prots: list[str], embed: Callable[[], torch.Tensor],
                        report: dict, lines: list[str], flush: Callable[[], None]) -> None:
    """``--error-set rounding``: nearest against GPTQ rounding (both bias-corrected), emulated,
    then the real kernels with each ``fp8_rounding``."""
    dev = torch.device(args.device)
    exact = embed()
    lines.append(f"## FP8 weight rounding, emulated (fp32 ESM-2, {len(prots)} test proteins; cosine of the mean "
                 "embedding against exact fp32; bias corrected at the calibration mean in every row)\n")
    lines.append("| variant | calibration proteins | load s | cosine min | median | mean 1-cos |\n|---|---:|---:|---:|---:|---:|")
    report.setdefault("rounding", {})

    def record(name: str, calib: int, seconds: float, got: torch.Tensor) -> None:
        cos = F.cosine_similarity(got, exact, dim=-1)
        report["rounding"][f"{name} ({calib})"] = {"min": float(cos.min()), "median": float(cos.median()),
                                                   "seconds": seconds}
        lines.append(f"| {name} | {calib} | {seconds:.1f} | {float(cos.min()):.6f} | {float(cos.median()):.6f} | "
                     f"{float((1 - cos).mean()):.2e} |")
        flush()

    for name, calib, damp, quant_act in (("nearest (as --precision fp8 was)", 64, None, True),
                                         ("GPTQ, damp 0.01", 64, 0.01, True),
                                         ("GPTQ, damp 0.01", 256, 0.01, True),
                                         ("GPTQ, damp 0.1", 256, 0.1, True),
                                         ("GPTQ, damp 0.01, activations exact", 256, 0.01, False)):
        torch.cuda.synchronize() if dev.type == "cuda" else None
        start = time.perf_counter()
        weights = rounded_weights(model, calibration_proteins(calib), dev, damp=damp)
        torch.cuda.synchronize() if dev.type == "cuda" else None
        seconds = time.perf_counter() - start
        _install_weights(model, weights, quant_act=quant_act)
        record(name, calib, seconds, embed())
        _install_weights(model, None)
        del weights
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    if dev.type != "cuda":
        return
    from virnucpro.config import Precision
    from virnucpro.models.embedders import Esm2Embedder, esm_fast_options
    from virnucpro.models.fast.fp8 import Fp8Rounding
    from virnucpro.models.reference.esm2 import build_random_esm2

    spec = model_spec(args)
    bf16 = build_random_esm2(spec, dev, torch.bfloat16, seed=0).eval()
    for rounding in Fp8Rounding:
        torch.cuda.synchronize()
        start = time.perf_counter()
        embedder = Esm2Embedder(bf16, fast=True, **{**esm_fast_options(Precision.FP8), "fp8_rounding": rounding})
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        record(f"real `--precision fp8` kernels, fp8_rounding={rounding.value}", 64, seconds,
               embedder.embed(prots).to(dev))
        del embedder
        torch.cuda.empty_cache()
    lines.append("")


def part_calibration(args: argparse.Namespace, report: dict, lines: list[str]) -> None:
    """``calibration``: what FP8's quantisation at load costs, whole and by step (one GEMM of each
    shape: the Gram matrix, the factor of its damped inverse, the rounding blocks)."""
    from virnucpro.models.fast import fp8_rounding
    from virnucpro.models.fast.esm2 import FastEsm2
    from virnucpro.models.fast.fp8 import Fp8Rounding, calibration_proteins as packaged
    from virnucpro.models.reference.esm2 import build_random_esm2

    dev = torch.device(args.device)
    model = build_random_esm2(model_spec(args), dev, torch.bfloat16, seed=0).eval()
    runner = FastEsm2(model, residual_dtype=torch.bfloat16)
    lines.append("## FP8 quantisation at load\n\n| what | seconds |\n|---|---:|")
    out = report.setdefault("calibration", {})

    def clock(name: str, fn: Callable[[], Any], repeat: int = 1) -> Any:
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        result = fn()  # once to warm up
        sync()
        start = time.perf_counter()
        for _ in range(repeat):
            result = fn()
        sync()
        out[name] = (time.perf_counter() - start) / repeat
        lines.append(f"| {name} | {out[name]:.3f} |")
        return result

    for rounding in Fp8Rounding:
        clock(f"all weights, fp8_rounding={rounding.value}", lambda: runner.calibrated_fp8_weights(packaged(), rounding))
    inputs: dict[int, torch.Tensor] = {}
    middle = len(runner.layer_args) // 2
    runner.calibration_forward(packaged(), lambda layer, gemm, x: inputs.setdefault(gemm, x.clone())
                               if layer == middle else None)
    for gemm, at in enumerate((2, 4, 8, 10)):
        x, weight = inputs[gemm], runner.layer_args[middle][at]
        name = f"layer {middle} GEMM {gemm} {tuple(weight.shape)}"
        g = clock(f"{name}: Gram matrix", lambda: fp8_rounding.gram(x), 3)
        clock(f"{name}: factor of the damped inverse", lambda: fp8_rounding._inverse_factor(g, 0.01), 3)
        clock(f"{name}: the whole rounding", lambda: fp8_rounding.compensated_rounding(weight, g), 3)
    lines.append("")
    del runner, model
    torch.cuda.empty_cache()


def model_spec(args: argparse.Namespace) -> Any:
    """ESM-2 3B, or with ``--small`` a 4-layer, 256-wide model of its architecture (a CPU smoke run)."""
    from virnucpro.models.reference.esm2 import ESM2_T36_3B_UR50D, Esm2Spec

    return Esm2Spec("esm2_t36_3B_UR50D", 4, 256, 4) if args.small else ESM2_T36_3B_UR50D


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--parts", default="kernels,gemms,error")
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="bf16,fp8,fp16",
                   help="the kernels part's precisions (fp16 last)")
    p.add_argument("--small", action="store_true", help="a 4-layer 256-wide model (smoke runs)")
    p.add_argument("--error-set", choices=("ways", "rounding"), default="ways",
                   help="the error part's variants: the ways to quantise (L3), or nearest against GPTQ rounding")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    report: dict[str, Any] = {"torch": torch.__version__, "gpu": gpu}
    lines = [f"# FP8 probe — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {report['gpu']}, "
             f"torch {torch.__version__}\n"]

    def flush() -> None:
        (args.out / "probe.md").write_text("\n".join(lines) + "\n")
        (args.out / "probe.json").write_text(json.dumps(report, indent=1, default=str))

    def kernels() -> None:
        from virnucpro.models.reference.esm2 import build_random_esm2

        model = build_random_esm2(model_spec(args), torch.device(args.device), torch.bfloat16, seed=0).eval()
        part_kernels(args, model, report, lines)
        del model
        torch.cuda.empty_cache()

    steps: dict[str, Callable[[], None]] = {
        "quant": lambda: part_quant(args, report, lines),
        "dnabert": lambda: part_dnabert(args, report, lines),
        "passes": lambda: part_passes(args, report, lines),
        "gemms": lambda: part_gemms(args, report, lines),
        "kernels": kernels,
        "error": lambda: part_error(args, report, lines, flush),
        "calibration": lambda: part_calibration(args, report, lines),
    }
    unknown = sorted(set(parts) - set(steps))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; the parts are {', '.join(steps)}")
    for name, step in steps.items():  # in this order, whatever the order asked
        if name in parts:
            step()
            flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
