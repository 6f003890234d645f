#!/usr/bin/env bash
# Installs the system packages the build, the tests and the smoke scripts use,
# on Debian/Ubuntu, only those that are missing. Run as root (or with sudo).
# --for-tests adds what only the test suite uses (HAProxy, for fleet.sh).
set -euo pipefail
pkgs=(libssh-dev pkg-config libssl-dev openssh-client curl python3-venv nodejs npm ca-certificates)
[ "${1:-}" = --for-tests ] && pkgs+=(haproxy)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
# Node.js from another source (nvm, the machine image) counts as installed.
if command -v node >/dev/null && command -v npm >/dev/null; then
  need=("${need[@]/nodejs}"); need=("${need[@]/npm}")
fi
clean=()
for p in "${need[@]}"; do [ -n "$p" ] && clean+=("$p"); done
if [ ${#clean[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${clean[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${clean[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup, or apt-get install cargo)" >&2; exit 1; }
