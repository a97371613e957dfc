"""Stage-alone sections: ESM-2 and DNABERT-S in this process, GEMM ceiling, kernel profile, 24-GB fit."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from bench.measure import cosine_rows, dnabert_flops, esm_flops, rate_row, run_embedder, sync
from virnucpro.pipeline.heap import settle_heap

ESM_VARIANTS: list[tuple[str, dict[str, Any], float | None]] = [
    ("fast path compiled, bf16 (as the pipeline; this subset)", {}, None),
    ("packed, fp32 residual, erf GELU (the exact function, in bf16)", {"fast": True}, 30.0),
    ("packed, bf16 residual, erf GELU", {"fast": True, "residual_dtype": "bf16"}, 30.0),
    ("packed, fp32 residual, fused bias+GELU epilogue", {"fast": True, "fused_gelu": True}, 30.0),
    ("padded batches, compiled (the code before packing)", {"fast": True, "packed": False}, 30.0),
    ("plain Esm2Encoder bf16 (before the fast path)", {"fast": False}, None),
]
"""ESM-2 variants measured on one subset; dtype names are resolved at run time (torch import)."""


def packing_info(embedder: Any) -> dict[str, Any]:
    """Whether an embedder ran packed, its self-check and any compile or packing failure."""
    runner = embedder.runner
    failed = [f.failed for f in getattr(runner, "compiled_functions", []) if f.failed]
    info: dict[str, Any] = {"packed": embedder.packed, "compile_failed": failed[0] if failed else None}
    packing = getattr(embedder, "packing", None)
    if packing is not None:
        info.update(packed_check_cos=packing.check_cosine, packed_failed=packing.failed)
    if hasattr(runner, "gated_interleaved") and embedder.packed:  # DNABERT-S: gate in the gated GEMM
        info["fused_geglu"] = runner.gated_interleaved is not None
    return info

__all__ = ["StageSections"]


class StageSections:
    """Sections of :class:`bench.run_bench.Bench` (a mixin: uses its plumbing and state)."""

    def esm_inputs(self) -> list[str]:
        """Up to ``--esm-frames`` proteins, half from the 500-bp and half from the 300-bp sample."""
        half = max(1, self.args.esm_frames // 2)
        p300 = [f.protein for f in self.frames300][:half]
        p500 = [f.protein for f in self.frames500][: self.args.esm_frames - len(p300)]
        mixed = p500 + p300
        random.Random(self.args.seed).shuffle(mixed)  # shards then hold both kinds, as in a real mix
        return mixed

    def esm_alone(self) -> None:
        import torch

        from virnucpro.config import Precision
        from virnucpro.models.embedders import Esm2Embedder, esm_fast_options

        m = self.models
        spec = m.esm_spec
        proteins = self.esm_inputs()
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats(self.device)
        # what a worker builds (compiled, packed, bf16 options on CUDA)
        options = esm_fast_options(Precision.BF16) if self.on_gpu else {}
        embedder = Esm2Embedder(m.esm, fast=True, **options)
        self.embedders["esm_bf16"] = embedder
        started = time.perf_counter()
        embedder.warmup(self.warmup_tokens(spec.embed_dim))  # as a worker: realistic sizes
        sync(self.device)
        compile_s = time.perf_counter() - started
        settle_heap()  # as a worker after loading (virnucpro.pipeline.heap)
        self.say(f"ESM-2 warm-up/compile {compile_s:.1f} s (compiled={embedder.runner.layer.enabled})")
        if self.on_gpu:
            self.gemm_ceiling(embedder)
        budget = self.budget(spec.embed_dim)
        self.esm_budget = budget
        # the pipeline's sample (500-bp chunks): what ESM-2 gets in the pipeline runs below
        p500 = [f.protein for f in self.frames500]
        run_embedder(embedder, p500[:64], budget, self.args.shard_frames)
        _, stats = run_embedder(embedder, p500, budget, self.args.shard_frames)
        flops = esm_flops(stats["lengths"], spec.num_layers, spec.embed_dim)
        peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.on_gpu else None
        main = rate_row("ESM-2 stage alone: fast path, compiled, bf16; the pipeline sample (500 bp)",
                        stats, flops, self.peak_tflops,
                        {"compile_s": round(compile_s, 1), "token_budget": budget, "peak_mib": peak_mib,
                         **packing_info(embedder)})
        self.row("esm", **main)
        self.result["esm_tokens_per_s"] = main["tokens_per_s"]
        self.result["esm500_frames_per_s"] = main["frames_per_s"]
        self.say(f"ESM-2 compiled (500 bp): {main['tokens_per_s']:.0f} tokens/s, "
                 f"{main['pct_peak'] or 0:.1f}% of peak, padding {main['padding_share']:.2%}")
        # the 300- and 500-bp length mix
        _, stats = run_embedder(embedder, proteins, budget, self.args.shard_frames)
        mix = rate_row("ESM-2 stage alone: compiled bf16; 300- and 500-bp chunks mixed", stats,
                       esm_flops(stats["lengths"], spec.num_layers, spec.embed_dim), self.peak_tflops)
        self.row("esm", **mix)
        self.say(f"ESM-2 compiled (mix): {mix['tokens_per_s']:.0f} tokens/s, "
                 f"{mix['pct_peak'] or 0:.1f}% of peak, padding {mix['padding_share']:.2%}")
        self.esm_fp8_rate(p500, main)

    def esm_fp8_rate(self, proteins: list[str], bf16_row: dict) -> None:
        """``--precision fp8``'s ESM-2 stage on the same proteins, against the bf16 row (issue 17)."""
        import torch

        from virnucpro.config import Precision
        from virnucpro.models.embedders import Esm2Embedder, esm_fast_options
        from virnucpro.models.fast.fp8 import fp8_device_problem

        m = self.models
        problem = fp8_device_problem(self.device)
        if problem or m.esm.layers[0].fc1.weight.dtype != torch.bfloat16:
            self.row("esm", name=f"ESM-2 stage alone: FP8 [skipped: {problem or 'weights not bf16'}]")
            return
        started = time.perf_counter()
        embedder = Esm2Embedder(m.esm, fast=True, **esm_fast_options(Precision.FP8))
        sync(self.device)
        calibrate_s = time.perf_counter() - started  # quantising the weights, with their calibration
        started = time.perf_counter()
        embedder.warmup(self.warmup_tokens(m.esm_spec.embed_dim))
        sync(self.device)
        compile_s = time.perf_counter() - started
        settle_heap()
        run_embedder(embedder, proteins[:64], self.esm_budget, self.args.shard_frames)
        _, stats = run_embedder(embedder, proteins, self.esm_budget, self.args.shard_frames)
        accum, rounding = embedder.runner.fp8_fast_accum, embedder.runner.fp8_rounding.value
        row = rate_row(f"ESM-2 stage alone: FP8 (e4m3 GEMMs, row-wise scales, use_fast_accum={accum}, "
                       f"fp8_rounding={rounding}: --precision fp8), compiled; the pipeline sample",
                       stats, esm_flops(stats["lengths"], m.esm_spec.num_layers, m.esm_spec.embed_dim),
                       self.peak_tflops, {"compile_s": round(compile_s, 1), "quantise_s": round(calibrate_s, 2),
                                          **packing_info(embedder)})
        row["vs_bf16_stage"] = row["tokens_per_s"] / bf16_row["tokens_per_s"]
        self.row("esm", **row)
        self.say(f"ESM-2 FP8: {row['tokens_per_s']:.0f} tokens/s = {row['vs_bf16_stage']:.2f}x bf16")
        reference, _ = run_embedder(embedder, proteins[:256], self.esm_budget, self.args.shard_frames)
        runner = embedder.runner
        default = runner.fp8_fast_accum
        runner.fp8_fast_accum = not default  # the same embedder, the other accumulation
        try:
            fast, stats = run_embedder(embedder, proteins, self.esm_budget, self.args.shard_frames)
            fast_row = rate_row(f"ESM-2 stage alone: FP8 with use_fast_accum={not default}", stats,
                                esm_flops(stats["lengths"], m.esm_spec.num_layers, m.esm_spec.embed_dim),
                                self.peak_tflops)
            cos = cosine_rows(reference, fast[: len(reference)])
            fast_row.update(vs_bf16_stage=fast_row["tokens_per_s"] / bf16_row["tokens_per_s"],
                            cos_min_vs_fp8=float(cos.min()))
            self.row("esm", **fast_row)
        finally:
            runner.fp8_fast_accum = default
        del embedder
        self.free_gpu()

    def esm_variants(self) -> None:
        """What the fast path replaced, and what it could still do, on the same subset."""
        import torch

        from virnucpro.models.embedders import Esm2Embedder

        m = self.models
        spec = m.esm_spec
        embedder = self.embedders["esm_bf16"]
        budget = self.esm_budget
        p500 = [f.protein for f in self.frames500]
        subset = p500[: max(1, len(p500) // self.args.variant_divisor)]
        reference = None
        for name, options, need in ESM_VARIANTS:
            kwargs = dict(options)
            if kwargs.get("residual_dtype") == "bf16":
                kwargs["residual_dtype"] = torch.bfloat16
            compiled = kwargs.get("fast") and kwargs.get("compile", True)
            if compiled and not self.on_gpu:
                continue  # inductor on the CPU: slow to compile and not what is measured here
            if need and self.args.time_limit - self.elapsed() < need + 250:  # keep time for the pipeline
                self.row("esm-variant", name=name + " [skipped: time]")
                continue
            var = embedder if not kwargs else Esm2Embedder(m.esm, **kwargs)
            if compiled and var is not embedder:
                t = time.perf_counter()
                var.warmup(self.warmup_tokens(spec.embed_dim))
                sync(self.device)
                kwargs_compile = round(time.perf_counter() - t, 1)
                settle_heap()
            else:
                kwargs_compile = None
            run_embedder(var, subset[: min(len(subset), 64)], budget, self.args.shard_frames)  # warm
            emb, stats = run_embedder(var, subset, budget, self.args.shard_frames)
            extra: dict[str, Any] = {"compile_s": kwargs_compile}
            if var.runner is not None:
                extra.update(packing_info(var))
            if reference is None:
                reference = emb
            else:
                cos = cosine_rows(reference, emb)
                extra["cos_min_vs_first"] = float(cos.min())
            self.row("esm-variant", **rate_row(name, stats,
                                               esm_flops(stats["lengths"], spec.num_layers, spec.embed_dim),
                                               self.peak_tflops, extra))
            self.say(f"  {name}: {stats['tokens'] / stats['seconds']:.0f} tokens/s")
            if var is not embedder:
                del var
            self.free_gpu()

    def gemm_ceiling(self, embedder: Any) -> None:
        """Time only the four GEMMs of an ESM-2 layer at the worker's batch size: the ceiling
        the element-wise work and attention are measured against."""
        import torch

        args = embedder.runner.layer_args[0]
        wqkv, bqkv, wo, bo, w1, b1, w2, b2 = args[2], args[3], args[4], args[5], args[8], args[9], args[10], args[11]
        dim = wo.shape[0]
        from virnucpro.pipeline.budget import MAX_GPU_TOKEN_BUDGET

        tokens = min(self.budget(dim), MAX_GPU_TOKEN_BUDGET)
        x = torch.randn(tokens, dim, device=self.device, dtype=wqkv.dtype)
        h = torch.randn(tokens, 4 * dim, device=self.device, dtype=wqkv.dtype)

        def layer() -> None:
            torch.nn.functional.linear(x, wqkv, bqkv)
            torch.nn.functional.linear(x, wo, bo)
            torch.nn.functional.linear(x, w1, b1)
            torch.nn.functional.linear(h, w2, b2)

        for _ in range(3):
            layer()
        times = []
        sustained_start = time.perf_counter()
        while time.perf_counter() - sustained_start < self.args.sustain_s:  # let clocks settle
            layer()
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            layer()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        per_layer = statistics.median(times)
        flops = 2 * 12 * dim * dim * tokens
        spec = self.models.esm_spec
        self.row("ceiling", name=f"ESM-2 GEMMs only (qkv, out, fc1, fc2) at {tokens} tokens/batch, "
                 f"after {self.args.sustain_s:.0f} s of load",
                 tokens_per_s=tokens / (per_layer * spec.num_layers), tflops=flops / per_layer / 1e12,
                 pct_peak=100 * flops / per_layer / 1e12 / self.peak_tflops if self.peak_tflops else None)
        self.say(f"ESM-2 GEMM-only ceiling: {tokens / (per_layer * spec.num_layers):.0f} tokens/s "
                 f"({flops / per_layer / 1e12:.0f} TFLOP/s)")

    def dnabert_alone(self) -> None:
        import torch

        from virnucpro.config import Precision
        from virnucpro.models.embedders import DnabertEmbedder, dnabert_fast_options

        m = self.models
        cfg = m.dnabert_config
        dna = [f.dna for f in self.frames500] * self.args.dnabert_repeat
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats(self.device)
        options = dnabert_fast_options(Precision.BF16) if self.on_gpu else {}
        embedder = DnabertEmbedder(m.dnabert, m.tokenizer, fast=True, **options)  # as a worker
        self.embedders["dnabert_bf16"] = embedder
        started = time.perf_counter()
        embedder.warmup(self.warmup_tokens(cfg.hidden_size))
        sync(self.device)
        compile_s = time.perf_counter() - started
        settle_heap()  # as a worker after loading (virnucpro.pipeline.heap)
        budget = self.budget(cfg.hidden_size)
        run_embedder(embedder, dna[:256], budget, self.args.shard_frames)
        _, stats = run_embedder(embedder, dna, budget, self.args.shard_frames)
        flops = dnabert_flops(stats["lengths"], cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size)
        peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.on_gpu else None
        fused = embedder.packed and embedder.runner.gated_interleaved is not None
        kind = ("packed (Triton ALiBi attention" + (", GEGLU in the gated GEMM)" if fused else ")")
                if embedder.packed else "padded, compiled")
        main = rate_row("DNABERT-S stage alone: fast path, bf16 attention and residual, "
                        + kind,
                        stats, flops, self.peak_tflops,
                        {"compile_s": round(compile_s, 1), "token_budget": budget,
                         "peak_mib": peak_mib, **packing_info(embedder)})
        self.row("dnabert", **main)
        self.result["dnabert_frames_per_s"] = main["frames_per_s"]
        self.say(f"DNABERT-S: {main['frames_per_s']:.0f} frames/s")
        self.dnabert_budget = budget
        _, drained = run_embedder(embedder, dna, budget, self.args.shard_frames, drain_each_shard=True)
        row = rate_row("DNABERT-S stage alone, every shard drained before the next is tokenised "
                       "(the emulation of runs A-E)", drained, flops, self.peak_tflops)
        self.row("dnabert", **row)
        self.result["dnabert_frames_per_s_drained"] = row["frames_per_s"]
        self.say(f"DNABERT-S, drained per shard: {row['frames_per_s']:.0f} frames/s")

    def dnabert_variants(self) -> None:
        import torch

        from virnucpro.models.embedders import DnabertEmbedder

        m = self.models
        cfg = m.dnabert_config
        budget = self.dnabert_budget
        dna = [f.dna for f in self.frames500] * self.args.dnabert_repeat
        subset = dna[: max(1, len(dna) // self.args.variant_divisor)]
        variants = [
            ("plain DnabertS bf16, fp32 attention (the code before the fast path)", {"fast": False}, 0.0),
            ("fast path eager (not compiled), bf16 attention", {"fast": True, "compile": False}, 0.0),
            ("fast path compiled, fp32 residual stream, padded (the bf16 default before run E)",
             {"fast": True, "compile": True, "packed": False}, 20.0),
            ("fast path compiled, bf16 residual, padded with the bias tensor (the default of run E)",
             {"fast": True, "compile": True, "packed": False, "residual_dtype": torch.bfloat16}, 20.0),
            ("packed, gated GEMM then the compiled GEGLU pass (the default of run F)",
             {"fast": True, "compile": True, "residual_dtype": torch.bfloat16, "fused_geglu": False}, 20.0),
        ]
        for name, kwargs, need in variants:
            if kwargs.get("compile") and not self.on_gpu:
                continue
            if need and self.args.time_limit - self.elapsed() < need + 250:  # keep time for the pipeline
                self.row("dnabert-variant", name=name + " [skipped: time]")
                continue
            var = DnabertEmbedder(m.dnabert, m.tokenizer, **kwargs)
            if kwargs.get("compile"):
                var.warmup(self.warmup_tokens(cfg.hidden_size))
                settle_heap()
            run_embedder(var, subset[:256], budget, self.args.shard_frames)
            _, stats = run_embedder(var, subset, budget, self.args.shard_frames)
            extra = packing_info(var) if var.runner is not None else {}
            self.row("dnabert-variant", **rate_row(name, stats,
                                           dnabert_flops(stats["lengths"], cfg.num_hidden_layers,
                                                         cfg.hidden_size, cfg.intermediate_size),
                                           self.peak_tflops, extra))
            self.say(f"  {name}: {stats['sequences'] / stats['seconds']:.0f} frames/s")
            del var
            self.free_gpu()

    def profile(self) -> None:
        """CUDA kernel time of one batch, by kernel family (ESM-2 uniform, ESM-2 masked, DNABERT-S)."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        if not self.on_gpu:
            return
        esm, dna = self.embedders["esm_bf16"], self.embedders["dnabert_bf16"]
        proteins = [f.protein for f in self.frames500]
        common = [p for p in proteins if len(p) == 166]
        per = max(2, self.esm_budget // 168)
        cases = [
            ("ESM-2, one uniform batch (no mask)", esm, (common * 4)[:per]),
            ("ESM-2, one mixed-length batch (mask)", esm,
             (common * 4)[: per - per // 10] + [p for p in proteins if 140 <= len(p) < 166][: per // 10]),
            ("DNABERT-S, one batch", dna, [f.dna for f in self.frames500][: self.dnabert_budget // 130]),
        ]
        families = {"triton (fused element-wise)": ("triton", "add_norm"),  # first: rotary kernels say "attention"
                    "attention": ("fmha", "flash", "sdpa", "attention", "efficient", "alibi"),
                    "gemm": ("gemm", "cutlass", "nvjet", "cublas", "sm90_x", "xmma")}
        texts, summary = [], {}
        for name, embedder, seqs in cases:
            rows = embedder.encode(seqs)
            embedder.submit(rows).result()
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                embedder.submit(rows).result()
            events = prof.key_averages()

            def dev_time(e: Any) -> float:  # self time: a kernel's own, never its parent op's too
                for attr in ("self_device_time_total", "self_cuda_time_total"):
                    value = getattr(e, attr, None)
                    if value:
                        return float(value)
                return 0.0

            kernels = [e for e in events if dev_time(e) > 0]
            total = sum(dev_time(e) for e in kernels)
            shares: dict[str, float] = {}
            for e in kernels:
                key = e.key.lower()
                fam = next((f for f, pats in families.items() if any(p in key for p in pats)), "other")
                shares[fam] = shares.get(fam, 0.0) + dev_time(e)
            tokens = sum(len(r) for r in rows)
            summary[name] = {"tokens": tokens, "gpu_ms": total / 1e3,
                             "shares": {k: round(v / total, 3) for k, v in shares.items()} if total else {}}
            table = ""
            for key in ("self_device_time_total", "self_cuda_time_total", None):
                try:
                    table = events.table(sort_by=key, row_limit=30, max_name_column_width=90)
                    break
                except Exception:  # noqa: BLE001 - sort keys differ across torch versions
                    continue
            texts.append(f"== {name}: {len(rows)} sequences, {tokens} tokens, "
                         f"{total / 1e3:.1f} ms GPU\n{table}")
            self.row("profile", name=name, gpu_ms=total / 1e3, tokens=tokens,
                     **{f"share_{k.split()[0]}": round(v / total, 3) for k, v in shares.items()} if total else {})
            self.say(f"profile {name}: {summary[name]}")
        (self.out / "profile.txt").write_text("\n\n".join(texts) + "\n")
        self.result["profile"] = summary

    def fit24(self) -> None:
        """Both bf16 models resident, token budget as a worker would size it on a 24-GB card."""
        import torch

        from virnucpro.pipeline.budget import token_budget

        if not self.on_gpu:
            return
        card = 24 * 10**9  # a "24 GB" card: 24e9 bytes (22.35 GiB)
        context = 600 * 2**20  # CUDA context + cuBLAS workspace, not seen by the allocator
        total = torch.cuda.get_device_properties(self.device).total_memory
        self.free_gpu()
        resident = torch.cuda.memory_allocated(self.device)  # both bf16 models (+ rotary tables)
        free = card - context - resident
        esm_budget = token_budget(free, self.models.esm_spec.embed_dim, 2)
        dna_budget = token_budget(free, self.models.dnabert_config.hidden_size, 2)
        torch.cuda.set_per_process_memory_fraction((card - context) / total, self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        retries = 0  # a worker halves a batch that runs out of memory: that is not a fit either
        try:
            proteins = [f.protein for f in self.frames500]
            per = max(1, esm_budget // 170)
            _, stats = run_embedder(self.embedders["esm_bf16"], (proteins * 4)[: per * 2], esm_budget,
                                    10**9)
            retries += stats["oom_retries"]
            dna = [f.dna for f in self.frames500]
            _, stats = run_embedder(self.embedders["dnabert_bf16"],
                                    (dna * 8)[: max(1, dna_budget // 110) * 2], dna_budget, 10**9)
            retries += stats["oom_retries"]
            peak = torch.cuda.max_memory_allocated(self.device)
            ok = retries == 0
        except torch.OutOfMemoryError as exc:
            peak, ok = torch.cuda.max_memory_allocated(self.device), False
            self.note(f"24-GB check ran out of memory: {exc}"[:300])
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, self.device)
        self.row("memory", name="24-GB fit: both bf16 models resident, worker-sized batches",
                 resident_models_gib=resident / 2**30, esm_token_budget=esm_budget,
                 dnabert_token_budget=dna_budget, peak_allocated_gib=peak / 2**30,
                 peak_plus_context_gib=(peak + context) / 2**30, oom_retries=retries,
                 fits_24gb=ok and peak + context <= card)
        self.say(f"24-GB check: peak {peak / 2**30:.1f} GiB allocated (+context), fits={ok}")
