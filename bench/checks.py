"""Agreement sections: precision vs fp32, fp32 vs the original tool's goldens, the original-style baseline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.measure import cosine_rows, esm_flops, run_embedder, sync

ROOT = Path(__file__).resolve().parents[1]
FILE_FRAMES = 10_000  # the original writes (and reloads both models for) one file per 10k frames

__all__ = ["CheckSections"]


class CheckSections:
    """Sections of :class:`bench.run_bench.Bench` (a mixin: uses its plumbing and state)."""

    def embed_as_worker(self, embedder: Any, sequences: list[str], precision: Any) -> Any:
        """Embeddings in input order through the workers' loop, in one shard, at the token budget
        a worker gives ``embedder`` at ``precision`` (agreement checks: not timed)."""
        out, _ = run_embedder(embedder, sequences, self.budget(embedder.dim, precision), 10**9)
        return out

    def bf16_embedders(self) -> tuple[Any, Any]:
        """The bf16 embedders of the stage-alone sections, or the same ones built again from the seed
        (a pipeline section releases the in-process models before ``precision`` runs)."""
        import torch

        from virnucpro.config import Precision
        from virnucpro.models.embedders import (
            DnabertEmbedder, Esm2Embedder, dnabert_fast_options, esm_fast_options,
        )
        from virnucpro.models.reference.dnabert import build_random_dnabert
        from virnucpro.models.reference.esm2 import build_random_esm2

        m, seed = self.models, self.args.seed
        dtype = torch.bfloat16 if self.on_gpu else torch.float32
        if "esm_bf16" not in self.embedders:
            esm = build_random_esm2(m.esm_spec, self.device, dtype, seed=seed)
            options = esm_fast_options(Precision.BF16) if self.on_gpu else {}
            self.embedders["esm_bf16"] = Esm2Embedder(esm, fast=True, **options)
        if "dnabert_bf16" not in self.embedders:
            dna = build_random_dnabert(m.dnabert_config, self.device, dtype, seed=seed)
            options = dnabert_fast_options(Precision.BF16) if self.on_gpu else {}
            self.embedders["dnabert_bf16"] = DnabertEmbedder(dna, m.tokenizer, fast=True, **options)
        return self.embedders["esm_bf16"], self.embedders["dnabert_bf16"]

    def precision(self) -> None:
        import numpy as np
        import torch

        from virnucpro.config import Precision
        from virnucpro.domain.calls import call_chunks
        from virnucpro.domain.records import FrameScore
        from virnucpro.models.demo import random_classifier
        from virnucpro.models.embedders import DnabertEmbedder, Esm2Embedder
        from virnucpro.models.reference.classifier import classify
        from virnucpro.models.reference.dnabert import build_random_dnabert
        from virnucpro.models.reference.esm2 import build_random_esm2

        m = self.models
        frames = self.frames500[: self.args.precision_frames]
        ids = [f.id for f in frames]
        proteins = [f.protein for f in frames]
        dna = [f.dna for f in frames]
        clf = random_classifier(m.dnabert_config.hidden_size + m.esm_spec.embed_dim, 512, self.args.seed)
        results: dict[str, dict[str, Any]] = {}

        def classify_all(d: Any, e: Any) -> Any:
            return classify(clf, torch.from_numpy(np.concatenate([d, e], axis=1)))

        def chunk_calls(probs: Any) -> dict[str, bool]:
            scores = [FrameScore(i, float(p[0]), float(p[1])) for i, p in zip(ids, probs)]
            return {c.chunk_id: c.is_virus for c in call_chunks(scores)}

        # fp32 reference: same seeds, so the same weights the bf16 models were rounded from
        esm32 = build_random_esm2(m.esm_spec, self.device, torch.float32, seed=self.args.seed)
        dna32 = build_random_dnabert(m.dnabert_config, self.device, torch.float32, seed=self.args.seed)
        t = time.perf_counter()
        e32 = self.embed_as_worker(Esm2Embedder(esm32), proteins, Precision.FP32)
        d32 = self.embed_as_worker(DnabertEmbedder(dna32, m.tokenizer), dna, Precision.FP32)
        self.precision_ref = (proteins, e32)
        p32 = classify_all(d32, e32)
        ref_chunks = chunk_calls(p32)
        self.say(f"fp32 reference on {len(frames)} frames in {time.perf_counter() - t:.1f} s")
        del dna32
        esm_bf16, dna_bf16 = self.bf16_embedders()
        candidates: list[tuple[str, Precision, Any, Any]] = [
            ("bf16 (compiled fast path: the pipeline's; ESM-2 bf16 residual + fused GELU, DNABERT-S "
             "bf16 residual)", Precision.BF16, esm_bf16, dna_bf16),
        ]
        if self.on_gpu:
            candidates.append(("bf16, DNABERT-S with the fp32 residual stream (eager)", Precision.BF16,
                               esm_bf16, DnabertEmbedder(dna_bf16.model, m.tokenizer, fast=True, compile=False)))
        esm_options = (("none (fp32 residual, erf GELU: the exact function in bf16)", {}),
                       ("bf16 residual only", {"residual_dtype": torch.bfloat16}),
                       ("fused bias+GELU only (tanh GELU)", {"fused_gelu": True}))
        if self.on_gpu:
            for label, options in esm_options:  # eager: the same function the compiled path runs
                candidates.append((f"bf16, ESM-2 options: {label} (eager)", Precision.BF16,
                                   Esm2Embedder(esm_bf16.model, fast=True, compile=False, **options),
                                   dna_bf16))
        for label, dt in (("fp16 (fast path, eager)", torch.float16),):
            e16 = build_random_esm2(m.esm_spec, self.device, dt, seed=self.args.seed)
            d16 = build_random_dnabert(m.dnabert_config, self.device, dt, seed=self.args.seed)
            candidates.append((label, Precision.FP16, Esm2Embedder(e16, compile=False),
                               DnabertEmbedder(d16, m.tokenizer, compile=False)))
        from virnucpro.models.embedders import esm_fast_options
        from virnucpro.models.fast.fp8 import fp8_device_problem

        if not self.on_gpu or fp8_device_problem(self.device) is None:  # the CPU runs the arithmetic too
            e8 = build_random_esm2(m.esm_spec, self.device, torch.bfloat16, seed=self.args.seed)
            fp8_options = esm_fast_options(Precision.FP8)
            from virnucpro.models.fast.fp8 import Fp8Rounding

            rounding = fp8_options["fp8_rounding"]
            other = next(r for r in Fp8Rounding if r is not rounding)
            for accum, weights in ((fp8_options["fp8_fast_accum"], rounding),
                                   (not fp8_options["fp8_fast_accum"], rounding),
                                   (fp8_options["fp8_fast_accum"], other)):
                label = ("--precision fp8" if (accum, weights) == (fp8_options["fp8_fast_accum"], rounding)
                         else "the other accumulation" if weights is rounding else "the other rounding")
                candidates.append((f"fp8 (ESM-2's GEMMs in e4m3, row-wise scales, use_fast_accum={accum}, "
                                   f"fp8_rounding={weights.value}: {label}; DNABERT-S bf16)", Precision.FP8,
                                   Esm2Embedder(e8, fast=True, packed=True, compile=self.on_gpu,
                                                **{**fp8_options, "fp8_fast_accum": accum,
                                                   "fp8_rounding": weights}),
                                   dna_bf16))
        for label, precision, esm_emb, dna_emb in candidates:
            if esm_emb is None or dna_emb is None:
                continue
            e = self.embed_as_worker(esm_emb, proteins, precision)
            d = self.embed_as_worker(dna_emb, dna, precision)
            probs = classify_all(d, e)
            chunks = chunk_calls(probs)
            ce, cd = cosine_rows(e32, e), cosine_rows(d32, d)
            frames_agree = float(((probs[:, 1] > probs[:, 0]) == (p32[:, 1] > p32[:, 0])).mean())
            chunks_agree = float(np.mean([chunks[c] == ref_chunks[c] for c in ref_chunks]))
            results[label] = {
                "esm_cos_min": float(ce.min()), "esm_cos_median": float(np.median(ce)),
                "dnabert_cos_min": float(cd.min()), "dnabert_cos_median": float(np.median(cd)),
                "max_abs_score_diff": float(np.abs(probs - p32).max()),
                "frame_label_agreement": frames_agree, "chunk_label_agreement": chunks_agree,
            }
            self.row("precision", name=f"{label} vs fp32 ({len(frames)} frames, random weights)",
                     **results[label])
            self.say(f"  {label}: ESM cos min {ce.min():.6f}, DNABERT cos min {cd.min():.6f}, "
                     f"frames agree {frames_agree:.2%}")
        del candidates, esm32
        self.free_gpu()

    def golden(self) -> None:
        """fp32 on this device vs the original tool's outputs on the tiny golden models."""
        import numpy as np

        from virnucpro.config import Precision
        from virnucpro.models.embedders import load_dnabert_embedder, load_esm2_embedder

        gdir = self.args.golden_dir
        if gdir is not None and not Path(gdir).is_dir():
            gdir = None
        elif gdir is None:
            for cand in (ROOT / ".carry" / "shared" / "golden" / "vanilla-tiny",
                         ROOT.parent / "shared" / "golden" / "vanilla-tiny"):
                if cand.is_dir():
                    gdir = cand
                    break
        if gdir is None or not Path(gdir).is_dir():
            self.note("golden tiny models not found (pass --golden-dir); GPU-vs-golden check skipped")
            return
        gdir = Path(gdir)
        ref = np.load(gdir / "ref_500_embeddings.npz")
        esm = load_esm2_embedder(gdir / "esm2_t36_tiny.pt", self.device, Precision.FP32)
        dnabert = load_dnabert_embedder(gdir / "dnabert_s_tiny", self.device, Precision.FP32)
        e = self.embed_as_worker(esm, [str(s) for s in ref["esm_seqs"]], Precision.FP32)
        d = self.embed_as_worker(dnabert, [str(s) for s in ref["dnabert_seqs"]], Precision.FP32)
        row = {"esm_max_abs_diff": float(np.abs(e - ref["esm2"]).max()),
               "dnabert_max_abs_diff": float(np.abs(d - ref["dnabert_s"]).max())}
        self.row("equivalence", name=f"fp32 on {self.device.type} vs original tool (golden tiny, "
                 f"{len(e)} frames)", **row)
        self.say(f"golden: {row}")

    def baseline(self) -> None:
        import numpy as np
        import torch

        from virnucpro.config import Precision
        from virnucpro.models.embedders import DnabertEmbedder, load_dnabert_embedder, load_esm2_embedder

        m = self.models
        quick = self.args.quick_baseline
        n_prot = self.args.baseline_frames or (96 if quick else 600)
        proteins = [f.protein for f in self.frames500][:n_prot]
        try:
            import esm as fair_esm
        except ImportError:
            fair_esm = None
            self.note("fair-esm is not installed: the ESM-2 baseline is skipped")
        res: dict[str, Any] = {}
        if fair_esm is not None:
            esm32 = getattr(m, "esm32", None)
            if esm32 is None:
                from virnucpro.models.reference.esm2 import build_random_esm2

                esm32 = build_random_esm2(m.esm_spec, self.device, torch.float32, seed=self.args.seed)
            alphabet = fair_esm.data.Alphabet.from_architecture("ESM-1b")
            with torch.device(self.device):
                model = fair_esm.model.esm2.ESM2(num_layers=m.esm_spec.num_layers,
                                                 embed_dim=m.esm_spec.embed_dim,
                                                 attention_heads=m.esm_spec.attention_heads,
                                                 alphabet=alphabet, token_dropout=True)
            missing, unexpected = model.load_state_dict(
                {k: v.contiguous() for k, v in esm32.state_dict().items()}, strict=False)
            assert not unexpected and all(k.startswith(("lm_head", "contact_head")) for k in missing)
            model = model.eval()
            # the original: FastaBatchedDataset + get_batch_indices(2048, extra_toks_per_seq=1)
            dataset = fair_esm.FastaBatchedDataset([str(i) for i in range(len(proteins))], proteins)
            batches = dataset.get_batch_indices(2048, extra_toks_per_seq=1)
            converter = alphabet.get_batch_converter(truncation_seq_length=1024)
            out = np.zeros((len(proteins), m.esm_spec.embed_dim), dtype=np.float32)

            def run_fair(batches: list[list[int]]) -> float:
                sync(self.device)
                t = time.perf_counter()
                for batch in batches:
                    labels, strs, toks = converter([(str(i), proteins[i]) for i in batch])
                    with torch.no_grad():
                        reps = model(toks.to(self.device), repr_layers=[m.esm_spec.num_layers],
                                     return_contacts=False)["representations"][m.esm_spec.num_layers]
                    for row, i in enumerate(batch):
                        out[i] = reps[row, 1 : len(proteins[i][:1024]) + 1].mean(0).float().cpu().numpy()
                sync(self.device)
                return time.perf_counter() - t

            run_fair(batches[:1])  # warm-up (cuBLAS handles, allocator)
            seconds = run_fair(batches)
            tokens = sum(min(len(p), 1024) + 2 for p in proteins)
            res["esm_fp32_fair_esm_tokens_per_s"] = tokens / seconds
            res["esm_fp32_fair_esm_frames_per_s"] = len(proteins) / seconds
            lengths = [min(len(p), 1024) + 2 for p in proteins]
            flops = esm_flops(lengths, m.esm_spec.num_layers, m.esm_spec.embed_dim)
            self.row("baseline", name=f"original-style ESM-2: fair-esm fp32, 2048-token batches "
                     f"({len(proteins)} frames)", seconds=seconds, tokens=tokens,
                     tokens_per_s=tokens / seconds, frames_per_s=len(proteins) / seconds,
                     tflops=flops / seconds / 1e12,
                     pct_peak=100 * flops / seconds / 1e12 / self.peak_tflops if self.peak_tflops else None)
            # fp32 equivalence at full size: our fp32 path vs fair-esm on the same weights
            from virnucpro.models.embedders import Esm2Embedder

            ours = self.embed_as_worker(Esm2Embedder(esm32), proteins, Precision.FP32)
            diff = float(np.abs(ours - out).max())
            cos = cosine_rows(out, ours)
            self.row("equivalence", name=f"our fp32 ESM-2 fast path vs fair-esm fp32, full size "
                     f"({len(proteins)} frames)", max_abs_diff=diff, cos_min=float(cos.min()))
            self.say(f"fair-esm fp32: {tokens / seconds:.0f} tokens/s; ours-vs-fair-esm fp32 "
                     f"max|diff| {diff:.2e}")
            del model, esm32
            m.esm32 = None
            self.free_gpu()
        # DNABERT-S one sequence per call, fp32 (our native module: the original's remote code
        # does not load on current transformers)
        from virnucpro.models.reference.dnabert import build_random_dnabert

        d32 = build_random_dnabert(m.dnabert_config, self.device, torch.float32, seed=self.args.seed)
        single = DnabertEmbedder(d32, m.tokenizer, fast=False)
        dna = [f.dna for f in self.frames500][: (150 if quick else 1000)]
        single.embed(dna[:3])
        sync(self.device)
        t = time.perf_counter()
        for s in dna:
            single.embed([s])
        sync(self.device)
        seconds = time.perf_counter() - t
        res["dnabert_single_frames_per_s"] = len(dna) / seconds
        self.row("baseline", name=f"original-style DNABERT-S: fp32, one sequence per call "
                 f"({len(dna)} frames)", seconds=seconds, frames_per_s=len(dna) / seconds)
        del single, d32
        self.free_gpu()
        # reload per 10k-frame file: both models from disk, fp32, as the original reloads them
        if "esm_ckpt" in self.paths:
            t = time.perf_counter()
            load_esm2_embedder(self.paths["esm_ckpt"], self.device, Precision.FP32, compile=False)
            sync(self.device)
            esm_load = time.perf_counter() - t
            self.free_gpu()
            t = time.perf_counter()
            load_dnabert_embedder(self.paths["dnabert_dir"], self.device, Precision.FP32, compile=False)
            sync(self.device)
            dna_load = time.perf_counter() - t
            self.free_gpu()
            res["reload_s"] = esm_load + dna_load
            self.row("baseline", name="reload both models, fp32, from disk (page cache; our loader — "
                     "a lower bound for fair-esm/transformers loading)", seconds=esm_load + dna_load,
                     esm_load_s=esm_load, dnabert_load_s=dna_load)
        if "esm_fp32_fair_esm_frames_per_s" in res:
            per_frame = (1 / res["esm_fp32_fair_esm_frames_per_s"] + 1 / res["dnabert_single_frames_per_s"]
                         + res.get("reload_s", 0.0) / FILE_FRAMES)
            res["original_frames_per_s"] = 1 / per_frame
            self.row("baseline", name="original-style pipeline, 1 GPU (derived: ESM + DNABERT per frame "
                     "+ reload per 10k frames; rates extrapolated from the subsets)",
                     frames_per_s=1 / per_frame)
        self.result["baseline"] = res
