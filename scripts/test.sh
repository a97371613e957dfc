#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then pytest (GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/offline_env.sh
# Two test processes (CI has 2 cores; most tests wait on worker processes and servers), each taking
# whole files (module fixtures such as the lab night's server stay in one process).
# VIRNUCPRO_TEST_PROCESSES=0 runs everything in this process.
python -m pytest -q -p no:cacheprovider --timeout=900 -n "${VIRNUCPRO_TEST_PROCESSES:-2}" --dist loadfile "$@"
