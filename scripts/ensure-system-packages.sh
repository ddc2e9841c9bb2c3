#!/usr/bin/env bash
# Installs the Debian packages the test-suite drives (only those whose binary is missing).
# apt-get update runs once, and only when something has to be installed.
set -euo pipefail
declare -A PACKAGE_FOR=(
  [redis-server]=redis-server
  [chromium]=chromium
  [caddy]=caddy
  [wrk]=wrk
  [rsync]=rsync
  [curl]=curl
)
missing=()
for binary in "${!PACKAGE_FOR[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${PACKAGE_FOR[$binary]}")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts services on install; the tests start their own instances on free ports.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop caddy redis-server >/dev/null 2>&1 || true
fi
