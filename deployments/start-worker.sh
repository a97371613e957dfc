#!/usr/bin/env bash
# Start a Prefect process worker for VirNucPro: one per GPU (a "GPU slot"), or the control worker.
#
#   deployments/start-worker.sh [GPU[,GPU...] | cpu | control] [--name NAME] [--work-queue QUEUE]
#                               [--limit N] [other `prefect worker start` options]
#
#   deployments/start-worker.sh 0        # slot gpu-<host>-0: CUDA_VISIBLE_DEVICES=0, one run at a time
#   deployments/start-worker.sh 1        # slot gpu-<host>-1
#   deployments/start-worker.sh 0,1      # one slot with two GPUs (a run starts one model worker per GPU)
#   deployments/start-worker.sh cpu      # slot cpu-<host>: no GPU (CUDA_VISIBLE_DEVICES="")
#   deployments/start-worker.sh control  # the nightly control run's worker (pool virnucpro-control)
#
# A GPU (or cpu) worker polls its own work queue on the GPU pool, the slot the night dispatches
# to, plus the pool's `default` queue (plain `prefect deployment run` runs). The slot queue is
# created with concurrency limit 1 and the worker starts with `--limit 1`: Prefect never runs two
# flow runs on one slot at once. --name, --work-queue and --limit override the defaults (worker
# virnucpro-<host>-gpu<N>, queue gpu-<host>-<N>, limit 1); other options go to `prefect worker start`.
#
# VIRNUCPRO_HOME (the checkout the flows run from; its package is put first on PYTHONPATH)
# defaults to the checkout this script lives in; PREFECT_API_URL must point at the server.
# Environment: VIRNUCPRO_POOL (default virnucpro-gpu), VIRNUCPRO_CONTROL_POOL (default
# virnucpro-control), VIRNUCPRO_VENV (default $VIRNUCPRO_HOME/.venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VIRNUCPRO_HOME="${VIRNUCPRO_HOME:-$(dirname "$here")}"
mode="${1:-0}"
if [ $# -gt 0 ]; then shift; fi

name="" queue="" limit=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--name) name="${2:?--name needs a value}"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    -q|--work-queue) queue="${2:?--work-queue needs a value}"; shift 2 ;;
    --work-queue=*) queue="${1#*=}"; shift ;;
    -l|--limit) limit="${2:?--limit needs a value}"; shift 2 ;;
    --limit=*) limit="${1#*=}"; shift ;;
    *) extra+=("$1"); shift ;;
  esac
done

venv="${VIRNUCPRO_VENV:-$VIRNUCPRO_HOME/.venv}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
fi

export PYTHONPATH="$VIRNUCPRO_HOME${PYTHONPATH:+:$PYTHONPATH}"
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS=virnucpro
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore  # the pool's own threads log too
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

host="$(hostname -s | tr '[:upper:]' '[:lower:]')"
case "$mode" in
  control)
    pool="${VIRNUCPRO_CONTROL_POOL:-virnucpro-control}"
    export CUDA_VISIBLE_DEVICES=""
    name="${name:-virnucpro-$host-control}"
    ;;
  cpu)
    pool="${VIRNUCPRO_POOL:-virnucpro-gpu}"
    export CUDA_VISIBLE_DEVICES=""
    name="${name:-virnucpro-$host-cpu}"
    queue="${queue:-cpu-$host}"
    limit="${limit:-1}"
    ;;
  *)
    if ! [[ "$mode" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
      echo "start-worker.sh: '$mode' is not a GPU list (0 or 0,1), 'cpu' or 'control'" >&2
      exit 2
    fi
    pool="${VIRNUCPRO_POOL:-virnucpro-gpu}"
    export CUDA_VISIBLE_DEVICES="$mode"
    name="${name:-virnucpro-$host-gpu${mode//,/-}}"
    queue="${queue:-gpu-$host-${mode//,/-}}"
    limit="${limit:-1}"
    ;;
esac

if [ -z "${PREFECT_API_URL:-}" ] && ! prefect config view 2>/dev/null | grep -q '^PREFECT_API_URL'; then
  echo "start-worker.sh: PREFECT_API_URL is not set; export PREFECT_API_URL=http://<server>:4200/api" >&2
  exit 2
fi

args=(--pool "$pool" --type process --name "$name")
if [ -n "$queue" ]; then
  # the slot's own queue, limit 1 (created once; on a restart only the limit is set again)
  if ! prefect work-queue create "$queue" --pool "$pool" --limit 1 >/dev/null 2>&1 \
      && ! prefect work-queue set-concurrency-limit "$queue" 1 --pool "$pool" >/dev/null 2>&1; then
    echo "start-worker.sh: cannot create work queue $queue on pool $pool; does the pool exist?" \
         "Create it: prefect work-pool create $pool --type process --base-job-template" \
         "deployments/gpu-process-pool.json" >&2
    exit 2
  fi
  args+=(--work-queue "$queue" --work-queue default)
fi
if [ -n "$limit" ]; then
  args+=(--limit "$limit")
fi

echo "worker $name: pool $pool${queue:+, slot queue $queue}${limit:+, limit $limit}," \
     "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES', VIRNUCPRO_HOME=$VIRNUCPRO_HOME" >&2
# A script's background job (`start-worker.sh 0 &`) starts with SIGINT ignored, and a shell cannot
# undo that; Prefect's worker stops on SIGINT/SIGTERM by sending itself SIGINT, which would then be
# ignored too (the worker ran on after `kill`). Reset SIGINT to its default for the worker.
if env --default-signal=INT true 2>/dev/null; then
  exec env --default-signal=INT prefect worker start "${args[@]}" "${extra[@]}"
fi
exec python -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  prefect worker start "${args[@]}" "${extra[@]}"
