#!/usr/bin/env bash
# The services the integration tests need, one script each under scripts/services/
# (kafka.sh: a Kafka-compatible broker; others as they are added). Each takes
# install|start|stop|status; this script runs the command on all of them: start in name
# order, stop in reverse order, and stop keeps going past a failure.
#
#   scripts/test-services.sh start|stop|status|install
#
# Everything they install goes under $SVC_DIR (default ~/.cache/pipeline-services).
set -euo pipefail
cd "$(dirname "$0")/services"
mapfile -t SERVICES < <(ls ./*.sh | sort)

case "${1:-}" in
  install|start)
    for s in "${SERVICES[@]}"; do bash "$s" "$1"; done ;;
  stop)
    rc=0
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do bash "${SERVICES[$i]}" stop || rc=1; done
    exit $rc ;;
  status)
    rc=0
    for s in "${SERVICES[@]}"; do echo -n "$(basename "$s" .sh): "; bash "$s" status || rc=1; done
    exit $rc ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
