#!/usr/bin/env bash
# One call on a GPU machine: the GPU tests, then the benchmark; logs and tables under $OUT.
#
#   bash bench/device_run.sh            # OUT set by the caller; TEST_S / BENCH_S cap each part
#   GPU_TESTS=... SECTIONS=... PARTS=... PROCESS_RUNS=3 PROFILE_START=1 PYSPY=1 bash bench/device_run.sh   # a part of it
#
# The GPU host has torch, triton, pytest, numpy, tokenizers, safetensors, click and nvidia-ml-py;
# the rest travels as wheels in .whl/ (offline hosts; the device README's --platform list):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl fair-esm==2.0.0 biopython
# and shared/golden/ in the checkout for the golden checks (a copy of ../shared).
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>&1
# the GPU tests: every @pytest.mark.gpu test of the suite (GPU_TESTS: other paths or -k, for a part)
GPU_TESTS=${GPU_TESTS:-"tests/unit/models tests/unit/test_budget.py tests/unit/test_embedding.py
  tests/integration/test_persistent_workers.py tests/integration/test_golden_models.py
  tests/integration/test_fp32_fallback.py"}
# shellcheck disable=SC2086 # GPU_TESTS is a list of words
timeout "${TEST_S:-240}" python3 -m pytest -q -rs -p no:cacheprovider --timeout=300 -m gpu $GPU_TESTS \
  2>&1 | tee "$OUT/gpu-tests.log" | tail -5
# the benchmark: full-size random-weight models on the 20,000-chunk sample
# PYSPY=1: the benchmark runs under py-spy (its wheel in .whl/), every process sampled, idle too
SPY=()
if [ "${PYSPY:-0}" = 1 ]; then
  SPY=(/tmp/site/bin/py-spy record --idle --subprocesses --rate 50 --format speedscope -o "$OUT/bench.speedscope.json" --)
fi
timeout "${BENCH_S:-330}" "${SPY[@]}" python3 bench/run_bench.py --out "$OUT/bench" --work /tmp/vbench --n-chunks 20000 \
  --esm-frames 4000 --sections "${SECTIONS:-env,peak,sample,models,esm_alone,precision,pipeline,fast_default}" \
  --fast-default-parts "${PARTS:-auto,duplicates,cache,process,pool_start}" --process-runs "${PROCESS_RUNS:-1}" \
  --time-limit "$(( ${BENCH_S:-330} - 20 ))" 2>&1 | tee "$OUT/bench.log" | tail -20
# where one worker's start goes (PROFILE_START=1; the models the benchmark wrote)
if [ "${PROFILE_START:-0}" = 1 ] && [ -d /tmp/vbench/models ]; then
  timeout "${PROFILE_S:-90}" python3 bench/profile_start.py --models /tmp/vbench/models --out "$OUT/start" \
    2>&1 | tail -60
fi
