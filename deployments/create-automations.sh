#!/usr/bin/env bash
# Create (or re-create) the VirNucPro automations on the server PREFECT_API_URL points at.
#
#   deployments/create-automations.sh                       # lost runs -> Crashed; predict re-run once
#   deployments/create-automations.sh slack-webhook/alerts  # ... and a failed night -> that block
#
# The files are deployments/automations/*.yaml; an automation of the same name is replaced.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false

replace() {  # replace(file): delete same-named automations, then create the file's
  grep -E '^  - name: ' "$1" | sed 's/^  - name: //' | while read -r name; do
    prefect --no-prompt automation delete "$name" >/dev/null 2>&1 || true
  done
  prefect automation create --from-file "$1"
}

replace "$here/automations/runs.yaml"
if [ $# -gt 0 ]; then
  id="$(prefect block inspect "$1" -o json | python -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
  filled="$(mktemp --suffix=.yaml)"
  trap 'rm -f "$filled"' EXIT
  sed "s/{{ block_document_id }}/$id/" "$here/automations/nightly-failed-notify.yaml" > "$filled"
  replace "$filled"
fi
