#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then the Prefect flow (ephemeral mode) on the bundled
# example input. Real weights are used when discovery finds them (see README); otherwise tiny
# DEMO models with random weights are built and the output says loudly that calls are meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/offline_env.sh
python flows/predict.py examples/example.fa.gz --output-dir "${1:-example_output}" --demo-if-missing
