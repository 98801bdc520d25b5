#!/usr/bin/env bash
# Sourced by the service scripts that install a Debian package when the binaries a test
# needs are missing (prometheus.sh, chromium.sh). Needs root, or sudo. Not a `.sh`, so
# test-services.sh does not take it for a service.

# Prints "sudo" unless running as root.
apt_sudo() {
  if [ "$(id -u)" -ne 0 ]; then
    echo sudo
  fi
}

# apt_install NAME [APT-GET INSTALL OPTIONS...] PACKAGE: installs PACKAGE quietly, saying so
# as NAME on stderr.
apt_install() {
  local name=$1 sudo
  shift
  sudo=$(apt_sudo)
  echo "$name: installing the Debian package ${*: -1}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
