#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then pytest (GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/offline_env.sh
python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
