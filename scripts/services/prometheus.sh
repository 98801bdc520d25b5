#!/usr/bin/env bash
# Prometheus and promtool for tests/prometheus.rs (the dashboard's queries against a real
# Prometheus) and the promtool check of our /metrics output. Called by
# scripts/test-services.sh; usable alone:
#
#   scripts/services/prometheus.sh install   # Debian package `prometheus` if missing
#   scripts/services/prometheus.sh start     # install only: the test starts its own server
#   scripts/services/prometheus.sh stop      # nothing to stop
#   scripts/services/prometheus.sh status
#
# There is no long-running server: each test run spawns `prometheus` itself, with a
# generated config that scrapes the pipeline it started, on free ports, in a temporary
# directory. So `start` only makes sure the binaries are there, and `stop` has nothing to do.
set -euo pipefail
# shellcheck source=apt_install.bash
. "$(dirname "$0")/apt_install.bash"

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

install() {
  if have; then
    return 0
  fi
  apt_install prometheus --no-install-recommends prometheus
  # The package starts a system service on some setups; the tests do not use it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $(apt_sudo) systemctl stop prometheus || true
  fi
  have
}

case "${1:-}" in
  install | start) install ;;
  stop) ;;
  status)
    if have; then
      echo "installed ($(prometheus --version 2>&1 | head -1))"
    else
      echo "not installed"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
