#!/usr/bin/env bash
# Start a Prefect process worker for VirNucPro, pinned to one GPU (or a set of GPUs).
#
#   deployments/start-worker.sh [GPU[,GPU...]] [extra `prefect worker start` options]
#
#   deployments/start-worker.sh 0            # worker "virnucpro-<host>-gpu0", CUDA_VISIBLE_DEVICES=0
#   deployments/start-worker.sh 1 --limit 1  # one flow run at a time on GPU 1
#   deployments/start-worker.sh cpu          # no GPU (CUDA_VISIBLE_DEVICES="")
#
# Flow runs of this worker see only its GPU(s), so a run's worker pool starts one model worker per
# pinned GPU. VIRNUCPRO_HOME (the checkout the deployments' pull step changes into) defaults to
# the checkout this script lives in; PREFECT_API_URL must point at the server (see README).
# Environment: VIRNUCPRO_POOL (default virnucpro-gpu), VIRNUCPRO_VENV (default $VIRNUCPRO_HOME/.venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VIRNUCPRO_HOME="${VIRNUCPRO_HOME:-$(dirname "$here")}"
gpus="${1:-0}"
if [ $# -gt 0 ]; then shift; fi

venv="${VIRNUCPRO_VENV:-$VIRNUCPRO_HOME/.venv}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
fi

export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS=virnucpro
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore  # the pool's own threads log too
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

if [ "$gpus" = "cpu" ]; then
  export CUDA_VISIBLE_DEVICES=""
  name="virnucpro-$(hostname -s)-cpu"
else
  export CUDA_VISIBLE_DEVICES="$gpus"
  name="virnucpro-$(hostname -s)-gpu${gpus//,/-}"
fi

if [ -z "${PREFECT_API_URL:-}" ] && ! prefect config view 2>/dev/null | grep -q '^PREFECT_API_URL'; then
  echo "start-worker.sh: PREFECT_API_URL is not set; export PREFECT_API_URL=http://<server>:4200/api" >&2
  exit 2
fi

echo "worker $name: pool ${VIRNUCPRO_POOL:-virnucpro-gpu}, CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES', VIRNUCPRO_HOME=$VIRNUCPRO_HOME" >&2
exec prefect worker start --pool "${VIRNUCPRO_POOL:-virnucpro-gpu}" --type process --name "$name" "$@"
