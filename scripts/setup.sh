#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the package and its test tools.
# torch, unless one is installed already (a GPU host keeps its CUDA build): scripts/torch_install.py
# decides. No NVIDIA GPU: the CPU build from PyTorch's CPU wheel index ($VIRNUCPRO_TORCH_CPU_INDEX),
# so pip never pulls a multi-GB CUDA build; that index unreachable: torch==2.13.0 from the
# configured index. A GPU: torch in the project's range from the configured index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c 'import torch' 2>/dev/null; then
  TORCH_CHOICE=$(python scripts/torch_install.py)   # one pip argument per line
  mapfile -t TORCH_ARGS <<<"$TORCH_CHOICE"
  python -m pip install -q "${TORCH_ARGS[@]}"
fi
python -m pip install -q -e '.[test]'
python -c 'import virnucpro, torch, prefect; print("virnucpro", virnucpro.__version__, "torch", torch.__version__, "prefect", prefect.__version__)'
# Chromium for the report's headless-browser test (tests/integration/test_report_browser.py, which
# skips without it): installed only when missing, as root, where apt-get exists; a failed install
# never fails the set-up.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; then
    echo "chromium installed (for the report's browser test)"
  else
    echo "note: chromium could not be installed; the report's browser test will be skipped" >&2
  fi
fi
