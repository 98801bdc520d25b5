#!/usr/bin/env bash
# Chromium, headless, for tests/live_map.rs (the live view's page drawn by a real browser,
# its screenshot compared by pixel statistics). Called by scripts/test-services.sh; usable
# alone:
#
#   scripts/services/chromium.sh install   # Debian package `chromium` if missing
#   scripts/services/chromium.sh start     # install only: the test starts its own browser
#   scripts/services/chromium.sh stop      # nothing to stop
#   scripts/services/chromium.sh status
#
# Each test run starts `chromium --headless` itself with a profile in a temporary
# directory, so there is no server to start or stop.
set -euo pipefail
# shellcheck source=apt_install.bash
. "$(dirname "$0")/apt_install.bash"

have() { command -v chromium >/dev/null 2>&1; }

install() {
  if have; then
    return 0
  fi
  apt_install chromium chromium
  have
}

case "${1:-}" in
  install | start) install ;;
  stop) ;;
  status)
    if have; then
      echo "installed ($(chromium --version 2>/dev/null | head -1))"
    else
      echo "not installed"
      exit 1
    fi
    ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
