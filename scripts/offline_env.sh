# Source this: the offline, no-telemetry Prefect environment the project's scripts and tests use.
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
if [ -z "${PREFECT_HOME:-}" ]; then
  PREFECT_HOME="$(mktemp -d -t virnucpro-prefect-XXXXXX)"
  export PREFECT_HOME
fi
export PREFECT_LOGGING_EXTRA_LOGGERS=virnucpro
# a fresh ephemeral server migrates its database first (~25 s on 2 cores; Prefect waits 20 s)
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}"
