"""Pipeline sections: model files in their real formats, 1 vs N GPUs, persistent vs standard workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PipelineSections", "FAST_DEFAULT_PARTS"]

FAST_DEFAULT_PARTS = ("auto", "duplicates", "cache", "process", "pool_start")
"""The ``fast_default`` section's parts, in the order they run (the first three on one started pool)."""


class PipelineSections:
    """Sections of :class:`bench.run_bench.Bench` (a mixin: uses its plumbing and state)."""

    def write_models(self) -> None:
        import argparse as ap

        import torch

        from virnucpro.models.demo import random_classifier, write_dnabert_dir
        from virnucpro.models.reference.classifier import save_classifier

        m = self.models
        started = time.perf_counter()
        mdir = self.work / "models"
        mdir.mkdir(parents=True, exist_ok=True)
        spec = m.esm_spec
        state = {f"encoder.{k}": v.detach().to("cpu", torch.float16)
                 for k, v in m.esm.state_dict().items()}
        dim, vocab = spec.embed_dim, len(m.esm.alphabet)
        state["encoder.lm_head.weight"] = state["encoder.embed_tokens.weight"]
        state["encoder.lm_head.bias"] = torch.zeros(vocab, dtype=torch.float16)
        state["encoder.lm_head.dense.weight"] = torch.zeros(dim, dim, dtype=torch.float16)
        state["encoder.lm_head.dense.bias"] = torch.zeros(dim, dtype=torch.float16)
        state["encoder.lm_head.layer_norm.weight"] = torch.ones(dim, dtype=torch.float16)
        state["encoder.lm_head.layer_norm.bias"] = torch.zeros(dim, dtype=torch.float16)
        cfg = ap.Namespace(encoder_layers=spec.num_layers, encoder_embed_dim=dim,
                           encoder_attention_heads=spec.attention_heads, token_dropout=True)
        path = mdir / "esm2_t36_3B_UR50D.pt"
        torch.save({"model": state, "cfg": {"model": cfg}}, path)
        torch.save({"model": {"contact_head.regression.weight": torch.zeros(1, spec.num_layers * spec.attention_heads),
                              "contact_head.regression.bias": torch.zeros(1)}},
                   mdir / "esm2_t36_3B_UR50D-contact-regression.pt")
        del state
        self.paths["esm_ckpt"] = path
        self.paths["dnabert_dir"] = write_dnabert_dir(mdir / "dnabert_s", m.dnabert_config, self.args.seed)
        clf = random_classifier(m.dnabert_config.hidden_size + spec.embed_dim, 512, self.args.seed)
        self.paths["classifier"] = mdir / "500_model.safetensors"
        save_classifier(clf, self.paths["classifier"])
        seconds = time.perf_counter() - started
        size = path.stat().st_size
        self.result["model_files"] = {"esm_bytes": size, "write_s": round(seconds, 1)}
        self.say(f"wrote models ({size / 1e9:.2f} GB ESM-2 checkpoint) in {seconds:.1f} s")

    def release_in_process_models(self) -> None:
        self.embedders.clear()
        self.models.esm = self.models.dnabert = None
        self.models.esm32 = None
        self.free_gpu()

    def _config(self, sample: Path, out: Path, gpus: tuple[int, ...], persistent: bool,
                precision: Any = None) -> Any:
        from virnucpro.config import DeviceKind, ModelPaths, Precision, RunConfig

        return RunConfig(
            input_fasta=sample, output_dir=out, chunk_length=500,
            models=ModelPaths(dnabert=self.paths["dnabert_dir"], esm=self.paths["esm_ckpt"],
                              classifier=self.paths["classifier"]),
            device=DeviceKind.CUDA if self.on_gpu else DeviceKind.CPU,
            precision=precision or (Precision.BF16 if self.on_gpu else Precision.FP32),
            gpus=gpus if self.on_gpu else None, persistent_models=persistent,
            shard_frames=self.args.shard_frames, resume=False,
        )

    def _pipeline_row(self, name: str, result: Any, wall: float, pool_start: float | None,
                      **extra: Any) -> dict[str, Any]:
        dn, es = result.stages
        frames = result.prepared.n_frames
        t = result.timings
        row = {
            "name": name, "frames": frames, "chunks": result.prepared.n_chunks,
            "wall_s": wall, "pool_start_s": pool_start,
            "prepare_s": t.get("prepare"), "dnabert_s": t.get("dnabert"), "esm_s": t.get("esm"),
            "classify_s": t.get("classify"), "report_s": t.get("report"),
            "frames_per_s": frames / wall, "esm_stage_tokens_per_s": es.tokens_per_s,
            "esm_stage_frames_per_s": es.frames_per_s, "dnabert_stage_frames_per_s": dn.frames_per_s,
            "worker_peak_mib": {k: max(dn.worker_peak_mib.get(k, 0), v) for k, v in es.worker_peak_mib.items()},
            "model_loads": es.model_loads,
        }
        row.update(extra)
        return row

    def pipeline(self) -> None:
        from virnucpro.pipeline.lease import PoolLease
        from virnucpro.pipeline.plan import plan_run
        from virnucpro.pipeline.prediction import run_prediction

        self.free_gpu()  # in-process models stay resident (later sections use them); caches go
        sample = self.paths["sample"]
        gpu_sets = [(0,)]
        if self.on_gpu and len(self.args.gpu_list) > 1:
            gpu_sets.append(tuple(self.args.gpu_list))
        outs: dict[tuple[int, ...], Path] = {}
        walls: dict[tuple[int, ...], dict[str, Any]] = {}
        for gpus in gpu_sets:
            if self.args.time_limit - self.elapsed() < 45:
                self.row("pipeline", name=f"{len(gpus)} GPU(s) [skipped: time]")
                continue
            out = self.work / f"run_{len(gpus)}gpu"
            config = self._config(sample, out, gpus, True)
            lease = PoolLease.owned()
            try:
                plan = plan_run(config, True)
                start_s = lease.start(list(plan.devices), plan.spec)
                load_s = [round(w.ready.load_seconds, 1) for w in lease.pool.workers if w.ready is not None]
                t = time.perf_counter()
                result = run_prediction(config, lease=lease)
                wall = time.perf_counter() - t
            finally:
                lease.close()
            row = self._pipeline_row(f"pipeline, {len(gpus)} GPU(s), persistent pool started before "
                                     "(load+compile not in wall)", result, wall, start_s,
                                     gpus=list(gpus), worker_load_compile_s=load_s)
            esm_alone = self.result.get("esm500_frames_per_s")
            if esm_alone and len(gpus) == 1:
                row["pipeline_vs_esm_alone"] = row["frames_per_s"] / esm_alone
                row["with_pool_start_vs_esm_alone"] = result.prepared.n_frames / (wall + start_s) / esm_alone
            self.row("pipeline", **row)
            if len(gpus) == 1:
                self.result["pipeline_1gpu_frames_per_s"] = row["frames_per_s"]
            outs[gpus] = out
            walls[gpus] = row
            self.say(f"pipeline {gpus}: {row['frames_per_s']:.0f} frames/s (wall {wall:.1f} s, pool "
                     f"start {start_s:.1f} s, ESM stage {row['esm_stage_tokens_per_s']:.0f} tokens/s)")
        if len(outs) == 2:
            one, two = (outs[g] for g in gpu_sets)
            same = all((one / n).read_bytes() == (two / n).read_bytes() for n in
                       ("prediction_results.txt", "prediction_results_highestscore.csv",
                        "prediction_sequences.tsv"))
            a, b = (walls[g] for g in gpu_sets)
            self.row("scaling", name=f"{len(gpu_sets[1])} GPUs vs 1 GPU, same sample",
                     outputs_equal=same, speedup_wall=a["wall_s"] / b["wall_s"],
                     speedup_esm_stage=a["esm_s"] / b["esm_s"])
            self.say(f"scaling: outputs equal {same}, wall speedup {a['wall_s'] / b['wall_s']:.2f}x, "
                     f"ESM stage {a['esm_s'] / b['esm_s']:.2f}x")

    def pipeline_batch(self) -> None:
        """Samples in a row on one persistent pool (the nightly batch); throughput against
        ESM-2 alone, over all samples and over the ones after the first (steady state)."""
        from virnucpro.pipeline.lease import PoolLease
        from virnucpro.pipeline.plan import plan_run
        from virnucpro.pipeline.prediction import run_prediction

        self.free_gpu()
        samples = [self.paths[f"batch{k}"] for k in range(self.args.batch_samples)]
        esm_alone = self.result.get("esm500_frames_per_s")
        configs = [self._config(s, self.work / f"batch_{k}", (0,), True) for k, s in enumerate(samples)]
        lease = PoolLease.owned()
        walls, frames = [], []
        try:
            plan = plan_run(configs[0], True)
            lease.start(list(plan.devices), plan.spec)
            t0 = time.perf_counter()
            for config in configs:
                t = time.perf_counter()
                result = run_prediction(config, lease=lease)
                walls.append(round(time.perf_counter() - t, 2))
                frames.append(result.prepared.n_frames)
            total = time.perf_counter() - t0
        finally:
            lease.close()
        rate = sum(frames) / total
        steady = sum(frames[1:]) / sum(walls[1:]) if len(walls) > 1 else rate
        row = {"frames": sum(frames), "wall_s": total, "frames_per_s": rate, "per_sample_s": walls,
               "steady_frames_per_s": steady}
        if esm_alone:
            row["vs_esm_alone"] = rate / esm_alone
            row["steady_vs_esm_alone"] = steady / esm_alone
        self.row("pipeline-batch", name=f"{len(samples)} samples in a row, one persistent pool "
                 "(started before)", **row)
        self.say(f"batch: {rate:.0f} frames/s, steady {steady:.0f} frames/s"
                 + (f" = {steady / esm_alone:.3f} x ESM alone" if esm_alone else ""))

    def persistent_vs_standard(self) -> None:
        from virnucpro.pipeline.lease import PoolLease
        from virnucpro.pipeline.plan import plan_run
        from virnucpro.pipeline.prediction import run_prediction

        self.free_gpu()  # in-process models stay resident (later sections use them); caches go
        samples = [self.paths[f"small{k}"] for k in range(self.args.n_samples)]
        gpus = (0,)
        # persistent: one pool for every sample
        t0 = time.perf_counter()
        first = self._config(samples[0], self.work / "pers_0", gpus, True)
        lease = PoolLease.owned()
        walls = []
        try:
            plan = plan_run(first, True)
            lease.start(list(plan.devices), plan.spec)
            start = time.perf_counter() - t0
            for k, sample in enumerate(samples):
                t = time.perf_counter()
                run_prediction(self._config(sample, self.work / f"pers_{k}", gpus, True), lease=lease)
                walls.append(time.perf_counter() - t)
            loads = lease.model_loads()
        finally:
            lease.close()
        total_p = time.perf_counter() - t0
        self.row("persistent", name=f"persistent pool, {len(samples)} samples in a row",
                 total_s=total_p, pool_start_s=start, per_sample_s=walls, model_loads=loads)
        self.say(f"persistent: {total_p:.1f} s for {len(samples)} samples (start {start:.1f} s)")
        # standard: a pool per stage per sample (the original's reload behaviour, minus per-file)
        t0 = time.perf_counter()
        walls_s, loads_s = [], {"dnabert": 0, "esm": 0}
        for k, sample in enumerate(samples):
            if self.args.time_limit - self.elapsed() < 40:
                self.note(f"standard mode stopped after {k} samples (time)")
                break
            t = time.perf_counter()
            res = run_prediction(self._config(sample, self.work / f"std_{k}", gpus, False))
            walls_s.append(time.perf_counter() - t)
            for st in res.stages:
                for v in st.model_loads.values():
                    for key in loads_s:
                        loads_s[key] += v.get(key, 0)
        total_s = time.perf_counter() - t0
        self.row("persistent", name=f"standard (pool per stage), {len(walls_s)} samples in a row",
                 total_s=total_s, per_sample_s=walls_s, model_loads=loads_s)
        if walls_s:
            self.row("persistent", name="persistent vs standard: wall per sample",
                     speedup=(total_s / len(walls_s)) / (total_p / len(samples)))
        self.say(f"standard: {total_s:.1f} s for {len(walls_s)} samples")

    # -- fast by default (issue 14) -------------------------------------------------------------
    def _started_run(self, config: Any, lease: Any = None) -> tuple[Any, float, float]:
        """``run_prediction`` on a pool started first: (result, wall without the start, start).
        ``lease``: a started lease to run on (kept open); None starts and closes one."""
        from virnucpro.pipeline.lease import PoolLease
        from virnucpro.pipeline.plan import plan_run
        from virnucpro.pipeline.prediction import run_prediction

        own = lease is None
        lease = PoolLease.owned() if own else lease
        try:
            plan = plan_run(config, True)
            start_s = lease.start(list(plan.devices), plan.spec)
            t = time.perf_counter()
            result = run_prediction(config, lease=lease.lend())
            return result, time.perf_counter() - t, start_s
        finally:
            if own:
                lease.close()

    def _started_rate_row(self, name: Callable[[Any], str], config: Any, stage_fields: tuple[str, ...],
                          lease: Any = None) -> float:
        """One ``fast-default`` row of a run on a started pool (frames, wall, frames/s, and each
        stage's ``stage_fields``); returns its frames/s."""
        res, wall, _ = self._started_run(config, lease)
        rate = res.prepared.n_frames / wall
        self.row("fast-default", name=name(res), frames=res.prepared.n_frames, wall_s=wall, frames_per_s=rate,
                 **{f"{field}_{st.stage.value}": getattr(st, field) for st in res.stages for field in stage_fields})
        return rate

    def fast_default(self) -> None:
        """What ``virnucpro predict`` runs without --precision: on a started pool (one pool for the
        default run, the duplicates pair and the embedding-cache pair), as a whole process, and the
        pool's start cold and warm. ``--fast-default-parts`` picks the parts."""
        from virnucpro.pipeline.lease import PoolLease

        parts = [p for p in self.args.fast_default_parts.split(",") if p]
        unknown = set(parts) - set(FAST_DEFAULT_PARTS)
        if unknown:
            raise ValueError(f"unknown --fast-default-parts {sorted(unknown)}; choose from {FAST_DEFAULT_PARTS}")
        self.free_gpu()
        lease = PoolLease.owned()
        try:
            for part in FAST_DEFAULT_PARTS:
                if part not in parts:
                    continue
                if part in ("process", "pool_start"):
                    lease.close()  # these start their own workers: the GPU is theirs
                    lease = PoolLease.owned()
                if self.args.time_limit - self.elapsed() < 60:
                    self.row("fast-default", name=f"{part} [skipped: time]")
                    continue
                getattr(self, f"_fast_default_{part}")(lease)
        finally:
            lease.close()

    def _fast_default_auto(self, lease: Any) -> None:
        from virnucpro.config import Precision

        esm_alone = self.result.get("esm500_frames_per_s")
        fastest = self.result.get("pipeline_1gpu_frames_per_s")  # bf16: the fastest validated
        result, wall, start_s = self._started_run(
            self._config(self.paths["sample"], self.work / "run_auto", (0,), True, precision=Precision.AUTO), lease)
        row = self._pipeline_row("pipeline, default precision (auto), pool started before", result,
                                 wall, start_s)
        if fastest:
            row["vs_fastest_validated_bf16"] = row["frames_per_s"] / fastest
        if esm_alone:
            row["pipeline_vs_esm_alone"] = row["frames_per_s"] / esm_alone
        self.row("fast-default", **row)
        self.say(f"default precision: {row['frames_per_s']:.0f} frames/s")

    def _fast_default_duplicates(self, lease: Any) -> None:
        """30% duplicate records against none, samples of the same size, on the started pool."""
        from bench.sample import write_fasta
        from virnucpro.config import Precision

        n = max(10, len(self.fragments) // 4)
        distinct = self.fragments[:n]
        keep = distinct[: n - (3 * n) // 10]
        dup = keep + [(f"dup{k}_{name}", seq) for k, (name, seq) in enumerate(keep[: n - len(keep)])]
        rates = {}
        for label, frags in (("no duplicates", distinct), ("30% duplicate records", dup)):
            path = write_fasta(self.work / f"sample_{label.split()[0]}.fa", frags)
            config = self._config(path, self.work / f"run_{label.split()[0]}", (0,), True,
                                  precision=Precision.AUTO)
            rates[label] = self._started_rate_row(
                lambda res, label=label: f"pipeline, {label} ({res.prepared.n_frames} frames), pool started",
                config, ("duplicate_frames",), lease)
        ratio = rates["30% duplicate records"] / rates["no duplicates"]
        self.row("fast-default", name="30% duplicates vs none: frames/s ratio", speedup=ratio)
        self.say(f"duplicates: {ratio:.2f}x frames/s")

    def _fast_default_cache(self, lease: Any) -> None:
        self._embedding_cache_rows(self.paths["sample"], lease)

    def _fast_default_process(self, lease: Any) -> None:
        """The whole `virnucpro predict` process (default precision, resident workers), run
        ``--process-runs`` times: the row's wall is the median, each run's in ``walls_s``."""
        import shutil
        import statistics
        import subprocess
        import sys

        sample = self.paths["sample"]
        esm_alone = self.result.get("esm500_frames_per_s")
        out = self.work / "run_cli"
        cmd = [sys.executable, "-m", "virnucpro.cli", "predict", str(sample), "--output-dir", str(out),
               "--dnabert-model", str(self.paths["dnabert_dir"]), "--esm-model", str(self.paths["esm_ckpt"]),
               "--classifier", str(self.paths["classifier"]), "--persistent-models", "--no-resume",
               "--shard-frames", str(self.args.shard_frames), "-v"]  # -v: each shard's line, timed
        walls = []
        for run in range(max(1, self.args.process_runs)):  # the same command again: the run-to-run spread
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            (self.out / f"process-run-{run + 1}.log").write_text(proc.stderr)  # every line, -v's too
            if proc.returncode:
                break
        wall = statistics.median(walls)
        frames = len(self.frames500)
        row = {"wall_s": wall, "frames": frames, "frames_per_s": frames / wall, "rc": proc.returncode,
               "walls_s": [round(w, 2) for w in walls]}
        if esm_alone:
            row["vs_esm_alone"] = frames / wall / esm_alone
        if proc.returncode:
            self.note(f"virnucpro predict failed: {proc.stderr[-800:]}")
        else:
            self.say("virnucpro predict log (the process's own lines):\n" + proc.stderr[-12000:])
        self.row("fast-default", name="whole `virnucpro predict` process (subprocess, default "
                 "precision, --persistent-models)", **row)
        self.say(f"virnucpro predict process: {row['frames_per_s']:.0f} frames/s (wall {wall:.1f} s)")

    def _fast_default_pool_start(self, lease: Any) -> None:
        """The pool's start with fresh compile caches, then again with the same caches."""
        import os
        import tempfile

        from virnucpro.config import Precision
        from virnucpro.pipeline.lease import PoolLease
        from virnucpro.pipeline.plan import plan_run

        caches = Path(tempfile.mkdtemp(prefix="vnp-cache-", dir=self.work))
        saved = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(caches / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(caches / "triton")
        try:
            for label, first_ready in (("cold (fresh compile caches)", False),
                                       ("warm (second start, caches warm)", False),
                                       ("warm, ready for the first stage (a run's own start; ESM-2 "
                                        "warms up beside DNABERT-S)", True)):
                own = PoolLease.owned()
                config = self._config(self.paths["sample"], self.work / "pool_start", (0,), True,
                                      precision=Precision.AUTO)
                try:
                    plan = plan_run(config, True)
                    start_s = own.start(list(plan.devices), plan.spec, first_stage_ready=first_ready)
                    loads = [(round(w.ready.load_seconds, 1)) for w in own.pool.workers if w.ready]
                    phases = [w.start_phases for w in own.pool.workers]
                finally:
                    own.close()
                self.row("fast-default", name=f"pool start, {label}", pool_start_s=start_s,
                         worker_load_compile_s=loads, worker_start_phases_s=phases)
                self.say(f"pool start {label}: {start_s:.1f} s")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _embedding_cache_rows(self, sample: Path, lease: Any = None) -> None:
        import dataclasses

        from virnucpro.config import Precision

        cache = self.work / "embedding_cache"
        rates = {}
        for label in ("fills the cache", "reads every row from the cache"):
            config = dataclasses.replace(
                self._config(sample, self.work / f"run_cache_{len(rates)}", (0,), True, precision=Precision.AUTO),
                embedding_cache=cache)
            rates[label] = self._started_rate_row(
                lambda res, label=label: f"pipeline, --embedding-cache, the run that {label}, pool started",
                config, ("cache_hits", "cache_added"), lease)
        ratio = rates["reads every row from the cache"] / rates["fills the cache"]
        self.row("fast-default", name="embedding cache: second run vs first, frames/s ratio", speedup=ratio)
        self.say(f"embedding cache: {ratio:.2f}x frames/s on the second run")
