#!/usr/bin/env python3
"""VirNucPro benchmark: one command, full-size random-weight models, a realistic sample.

    python bench/run_bench.py --out OUT [--gpus 0,1] [--n-chunks 20000] [--quick-baseline]

On the GPU machine it

1. measures the ceilings it reports against (bf16 dense matmul on random data, per GPU; a
   device-to-device copy);
2. cuts a realistic sample from the real genomes in ``bench/data`` (fragments of 300 bp to 3 kb,
   both strands, 80% bacterial / 20% viral) and prepares its frames as the pipeline does;
3. builds DNABERT-S (117M) and ESM-2 3B (2.84B) with random weights directly on the GPU;
4. times each stage alone in this process, through the workers' embedding loop: ESM-2 (compiled
   fast path, and the variants it replaced), DNABERT-S likewise; peak memory; a 24-GB fit check;
5. precision agreement (fp32 vs bf16 / fp16, same weights): embedding cosine, scores, labels;
6. the original-style baseline in the same run: fp32 ESM-2 through fair-esm with 2048-token
   batches, DNABERT-S one sequence per call, the models reloaded per 10k-frame file (reload cost
   measured once and charged per 10k frames);
7. writes the models in their real formats and runs the real pipeline
   (:func:`virnucpro.pipeline.prediction.run_prediction`, worker processes loading from paths):
   1 GPU vs 2 GPUs on the same sample (outputs compared), persistent vs standard workers over
   several samples in a row.

It prints one table and writes ``OUT/bench.json`` and ``OUT/bench.md``. ``--device cpu --tiny``
runs every code path on the CPU with tiny models (tests, smoke checks). Sections that would not
finish inside ``--time-limit`` are skipped and say so; a failing section records its error and
the rest still run.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.checks import CheckSections  # noqa: E402 - after the path set-up above
from bench.measure import sync  # noqa: E402
from bench.pipeline_runs import FAST_DEFAULT_PARTS, PipelineSections  # noqa: E402
from bench.sample import frames_of, make_sample, write_fasta  # noqa: E402
from bench.stages import StageSections  # noqa: E402

log = logging.getLogger("bench")


@dataclass
class Models:
    esm: Any = None
    dnabert: Any = None
    tokenizer: Any = None
    esm_spec: Any = None
    dnabert_config: Any = None


class Bench(StageSections, CheckSections, PipelineSections):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work) if args.work else self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.result: dict[str, Any] = {"sections": {}, "rows": [], "notes": []}
        self.models = Models()
        self.peak_tflops: float | None = None
        self.frames500: list[Any] = []
        self.fragments: list[tuple[str, str]] = []
        self.paths: dict[str, Path] = {}
        self.embedders: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def section(self, name: str, fn: Any, need_s: float = 0.0) -> None:
        left = self.args.time_limit - self.elapsed()
        if left < need_s:
            self.say(f"SKIP {name}: {left:.0f} s left, needs ~{need_s:.0f} s")
            self.result["sections"][name] = {"status": "skipped", "reason": f"time ({left:.0f} s left)"}
            return
        self.say(f"== {name}")
        started = time.perf_counter()
        try:
            fn()
            status = {"status": "ok"}
        except Exception as exc:  # record, keep going
            status = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000],
                      "traceback": traceback.format_exc()[-4000:]}
            self.say(f"ERROR in {name}: {type(exc).__name__}: {str(exc)[:300]}")
        status["seconds"] = round(time.perf_counter() - started, 2)
        self.result["sections"][name] = status
        self.save()

    def row(self, group: str, **values: Any) -> None:
        values = {"group": group, **values}
        self.result["rows"].append(values)

    def note(self, text: str) -> None:
        self.result["notes"].append(text)

    def save(self) -> None:
        (self.out / "bench.json").write_text(json.dumps(self.result, indent=1, default=str) + "\n")

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cuda:0" if self.args.device == "cuda" else "cpu")

    @property
    def on_gpu(self) -> bool:
        return self.args.device == "cuda"

    def free_gpu(self) -> None:
        import torch

        gc.collect()
        if self.on_gpu:
            torch.cuda.empty_cache()

    def budget(self, dim: int, precision: Any = None) -> int:
        """The token budget a worker gives a model of width ``dim`` (bf16 unless ``precision``
        says otherwise) now: :func:`virnucpro.pipeline.budget.batch_budget`."""
        from virnucpro.config import Precision
        from virnucpro.pipeline.budget import batch_budget

        return batch_budget(self.device, dim, precision or Precision.BF16, self.args.toks_per_batch)

    def warmup_tokens(self, dim: int) -> int:
        """The warm-up batch a worker uses: :func:`virnucpro.pipeline.budget.warmup_tokens`."""
        from virnucpro.config import Precision
        from virnucpro.pipeline.budget import warmup_tokens

        return warmup_tokens(self.device, dim, Precision.BF16, self.args.toks_per_batch)

    def env(self) -> None:
        import torch

        info: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "argv": sys.argv,
        }
        for name in ("tokenizers", "transformers", "numpy", "safetensors", "triton", "esm"):
            try:
                module = __import__(name)
                info[name] = getattr(module, "__version__", "present")
            except Exception as exc:  # noqa: BLE001 - reported
                info[name] = f"missing ({type(exc).__name__})"
        if self.on_gpu:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            props = torch.cuda.get_device_properties(0)
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["sms"] = props.multi_processor_count
        self.result["env"] = info
        self.say(f"torch {info['torch']}, tokenizers {info['tokenizers']}, esm {info['esm']}, "
                 f"gpus {info.get('gpus')}")

    def peak(self) -> None:
        import torch

        if not self.on_gpu:
            self.note("CPU run: no matmul peak measured; % of peak is not reported")
            return
        n = 8192
        peaks = []
        for gpu in range(min(torch.cuda.device_count(), len(self.args.gpu_list) or 1)):
            with torch.cuda.device(gpu):  # events and kernels on the same device
                peaks.append(self._peak_on(gpu, n))
        self.peak_tflops = peaks[0]
        self.result["peak_tflops"] = peaks
        torch.cuda.empty_cache()

    def _peak_on(self, gpu: int, n: int) -> float:
        import torch

        dev = torch.device(f"cuda:{gpu}")
        gen = torch.Generator(device=dev).manual_seed(gpu)
        mats = [torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(4)]
        for i in range(5):
            torch.mm(mats[i % 2], mats[2 + i % 2])
        times = []
        for i in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(mats[i % 2], mats[2 + (i // 2) % 2])
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        tflops = 2 * n**3 / statistics.median(times) / 1e12
        src = torch.empty(2**30, dtype=torch.uint8, device=dev).random_()
        dst = torch.empty_like(src)
        dst.copy_(src)
        ctimes = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            ctimes.append(start.elapsed_time(end) / 1e3)
        bw = 2 * src.numel() / statistics.median(ctimes) / 1e12
        self.row("ceiling", name=f"GPU {gpu}: bf16 matmul 8192³ (random data, median of 20)",
                 tflops=tflops, copy_tb_s=bw)
        self.say(f"GPU {gpu}: bf16 matmul {tflops:.0f} TFLOP/s, D2D copy {bw:.2f} TB/s")
        del mats, src, dst
        return tflops

    def sample(self) -> None:
        args = self.args
        started = time.perf_counter()
        self.fragments = make_sample(args.n_chunks, seed=args.seed)
        self.paths["sample"] = write_fasta(self.work / "sample_main.fa", self.fragments)
        self.frames500 = frames_of(self.fragments, 500)
        # a second, independent sample cut at 300 bp: the "300- and 500-bp chunks" length mix
        frags300 = make_sample(max(1, args.n_chunks // 4), seed=args.seed + 1, chunk_length=300)
        self.frames300 = frames_of(frags300, 300)
        for k in range(args.n_samples):
            small = make_sample(args.small_chunks, seed=args.seed + 100 + k)
            self.paths[f"small{k}"] = write_fasta(self.work / f"sample_small_{k}.fa", small)
        for k in range(args.batch_samples):
            batch = make_sample(args.batch_chunks, seed=args.seed + 200 + k)
            self.paths[f"batch{k}"] = write_fasta(self.work / f"sample_batch_{k}.fa", batch)
        lengths = [len(f.protein) + 2 for f in self.frames500]
        common = max(set(lengths), key=lengths.count)
        info = {
            "fragments": len(self.fragments),
            "bp": sum(len(s) for _, s in self.fragments),
            "chunks_500": args.n_chunks,
            "frames_500": len(self.frames500),
            "frames_300": len(self.frames300),
            "esm_tokens_500": sum(lengths),
            "most_common_tokens": common,
            "share_most_common": round(lengths.count(common) / len(lengths), 3),
            "seconds": round(time.perf_counter() - started, 2),
        }
        self.result["sample"] = info
        self.say(f"sample: {info}")

    def build_models(self) -> None:
        import torch

        from virnucpro.models.reference.dnabert import DnabertConfig, build_random_dnabert
        from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer
        from virnucpro.models.reference.esm2 import ESM2_T36_3B_UR50D, Esm2Spec, build_random_esm2

        m = self.models
        m.esm_spec = (Esm2Spec("esm2_t36_3B_UR50D", 36, 64, 4) if self.args.tiny
                      else ESM2_T36_3B_UR50D)
        m.dnabert_config = (DnabertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=12,
                                          intermediate_size=96) if self.args.tiny else DnabertConfig())
        dtype = torch.bfloat16
        started = time.perf_counter()
        m.esm = build_random_esm2(m.esm_spec, self.device, dtype, seed=self.args.seed)
        sync(self.device)
        esm_s = time.perf_counter() - started
        started = time.perf_counter()
        m.dnabert = build_random_dnabert(m.dnabert_config, self.device, dtype, seed=self.args.seed)
        m.tokenizer = DnaTokenizer.from_model_dir(Path("/nonexistent"))
        sync(self.device)
        dna_s = time.perf_counter() - started
        n_esm = sum(p.numel() for p in m.esm.parameters())
        n_dna = sum(p.numel() for p in m.dnabert.parameters())
        self.result["models"] = {"esm": m.esm_spec.name, "esm_params": n_esm,
                                 "esm_layers": m.esm_spec.num_layers, "esm_dim": m.esm_spec.embed_dim,
                                 "dnabert_params": n_dna, "esm_build_s": round(esm_s, 2),
                                 "dnabert_build_s": round(dna_s, 2), "dtype": "bf16"}
        self.say(f"built ESM-2 {n_esm / 1e9:.3f}B params in {esm_s:.1f} s, DNABERT-S "
                 f"{n_dna / 1e6:.1f}M in {dna_s:.1f} s")

    def table(self) -> str:
        def f(v: Any, fmt: str = "{:.0f}") -> str:
            if v is None:
                return "-"
            if isinstance(v, bool):
                return "yes" if v else "NO"
            if isinstance(v, float):
                return fmt.format(v)
            return str(v)

        lines = ["| group | what | tokens/s | frames/s | % peak | wall s | other |",
                 "|---|---|---:|---:|---:|---:|---|"]
        skip = {"group", "name", "tokens_per_s", "frames_per_s", "pct_peak", "seconds", "wall_s",
                "lengths"}
        for r in self.result["rows"]:
            other = ", ".join(
                f"{k}={f(v, '{:.6f}' if 'cos' in k else '{:.4g}')}" for k, v in r.items()
                if k not in skip and v is not None and not isinstance(v, (dict, list))
            )
            for k in ("worker_peak_mib", "model_loads", "per_sample_s", "worker_load_compile_s"):
                if isinstance(r.get(k), (dict, list)):
                    val = r[k]
                    if isinstance(val, list):
                        val = [round(x, 1) for x in val]
                    other += f", {k}={val}"
            lines.append(
                f"| {r['group']} | {r['name']} | {f(r.get('tokens_per_s'))} | "
                f"{f(r.get('frames_per_s'))} | {f(r.get('pct_peak'), '{:.1f}')} | "
                f"{f(r.get('wall_s', r.get('seconds')), '{:.1f}')} | {other} |"
            )
        return "\n".join(lines)

    def finish(self) -> None:
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        table = self.table()
        env = self.result.get("env", {})
        md = [
            "# VirNucPro benchmark",
            "",
            f"- date: {env.get('date')}; host: {env.get('host')}; GPUs: {env.get('gpus')}; "
            f"torch {env.get('torch')}",
            f"- command: `{' '.join(sys.argv)}`",
            f"- models: {self.result.get('models')}",
            f"- sample: {self.result.get('sample')}",
            f"- measured bf16 matmul peak (TFLOP/s): {self.result.get('peak_tflops')}",
            f"- elapsed: {self.result['elapsed_s']} s",
            "",
            table,
            "",
            "Sections:",
            *(f"- {k}: {v.get('status')} {v.get('error', '')}".rstrip()
              for k, v in self.result["sections"].items()),
            "",
            "Notes:",
            *(f"- {n}" for n in self.result["notes"]),
        ]
        (self.out / "bench.md").write_text("\n".join(md) + "\n")
        self.save()
        print()
        print(table)
        bad = [k for k, v in self.result["sections"].items() if v.get("status") != "ok"]
        print(f"\nsections not ok: {bad or 'none'}; elapsed {self.result['elapsed_s']} s; "
              f"full results in {self.out}/bench.json, bench.md")

    def run(self) -> None:
        a = self.args
        plan = [
            ("env", self.env, 0),
            ("peak", self.peak, 0),
            ("sample", self.sample, 0),
            ("models", self.build_models, 0),
            ("esm_alone", self.esm_alone, 30),
            ("dnabert_alone", self.dnabert_alone, 20),
            ("golden", self.golden, 5),
            ("profile", self.profile, 10),
            ("esm_variants", self.esm_variants, 30),
            ("dnabert_variants", self.dnabert_variants, 15),
            ("fit24", self.fit24, 15),
            ("write_models", self.write_models, 30),
            ("pipeline", self.pipeline, 60),
            ("fast_default", self.fast_default, 60),
            ("pipeline_batch", self.pipeline_batch, 60),
            ("precision", self.precision, 25),
            ("baseline", self.baseline, 25),
            # measured (E2): pool start 16 s, then per sample ~5 s persistent + ~43 s standard
            ("persistent_vs_standard", self.persistent_vs_standard, 20 + 50 * a.n_samples),
        ]
        only = set(a.sections.split(",")) if a.sections else None
        needs = {  # sections a section needs first
            "esm_variants": {"esm_alone"}, "dnabert_variants": {"dnabert_alone"},
            "fit24": {"esm_alone", "dnabert_alone"}, "baseline": {"write_models"},
            "profile": {"esm_alone", "dnabert_alone"},
            "pipeline": {"write_models"}, "persistent_vs_standard": {"write_models"},
            "pipeline_batch": {"write_models", "esm_alone"},
            "fast_default": {"write_models"},  # esm_alone only for the ratios (present when run)
        }
        if only is not None:
            only |= {"env", "sample", "models"}
            for name in list(only):
                only |= needs.get(name, set())
        for name, fn, need in plan:
            if only is None or name in only:
                self.section(name, fn, need)
        self.finish()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where bench.json, bench.md and logs go")
    p.add_argument("--work", default=None, help="scratch directory (models, samples, runs) "
                   "[default: OUT/work, deleted at the end unless --keep-work]")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="[default: cuda if present]")
    p.add_argument("--gpus", default=None, help="GPU indices for the multi-GPU run [default: all]")
    p.add_argument("--n-chunks", type=int, default=20000, help="500-bp chunks in the main sample")
    p.add_argument("--small-chunks", type=int, default=1000,
                   help="chunks per sample for persistent vs standard")
    p.add_argument("--n-samples", type=int, default=5, help="samples in a row (persistent vs standard)")
    p.add_argument("--batch-samples", type=int, default=3,
                   help="samples in a row for the batch throughput (one persistent pool)")
    p.add_argument("--batch-chunks", type=int, default=4000, help="500-bp chunks per batch sample")
    p.add_argument("--esm-frames", type=int, default=8000,
                   help="proteins in the 300+500-bp mix run of ESM-2 alone (half of each)")
    p.add_argument("--precision-frames", type=int, default=512)
    p.add_argument("--baseline-frames", type=int, default=None)
    p.add_argument("--dnabert-repeat", type=int, default=3, help="repeat the DNA list for DNABERT-alone")
    p.add_argument("--variant-divisor", type=int, default=8, help="variants run on 1/N of the sample")
    p.add_argument("--shard-frames", type=int, default=1024,
                   help="frames per shard (pipeline runs and the stage-alone emulation)")
    p.add_argument("--toks-per-batch", type=int, default=None)
    p.add_argument("--fast-default-parts", default=",".join(FAST_DEFAULT_PARTS),
                   help="parts of the fast_default section, comma-separated [default: all: %(default)s]")
    p.add_argument("--process-runs", type=int, default=1,
                   help="runs of the whole `virnucpro predict` process (fast_default's process part; median)")
    p.add_argument("--quick-baseline", action="store_true",
                   help="baseline on small subsets (rates extrapolated, labelled)")
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke runs, tests)")
    p.add_argument("--golden-dir", type=Path, default=None)
    p.add_argument("--sections", default=None, help="comma-separated subset of sections")
    p.add_argument("--time-limit", type=float, default=420.0,
                   help="seconds; sections that would not fit are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sustain-s", type=float, default=3.0,
                   help="seconds of GEMM load before the GEMM-only ceiling is timed (clocks settle)")
    args = p.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda":
        count = torch.cuda.device_count()
        args.gpu_list = ([int(g) for g in args.gpus.split(",")] if args.gpus else list(range(count)))
    else:
        args.gpu_list = []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=str(out / "bench.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bench = Bench(args)
    try:
        bench.run()
    finally:
        if not args.keep_work and not args.work:
            import shutil

            shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
