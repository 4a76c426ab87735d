#!/usr/bin/env bash
# Installs every build and test dependency of sdgate from Debian's packages.
# Idempotent: packages already present are left alone, so re-running is cheap.
# Usage: deploy/install-deps.sh            (needs root or sudo)
# The CUDA toolkit is not a Debian package here: CMake uses nvcc when it finds
# one (/usr/local/cuda/bin or PATH) and builds the CPU engine alone otherwise.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libh2o-evloop-dev libwebsockets-dev libcurl4-openssl-dev libjansson-dev
  libsqlite3-dev sqlite3 libstb-dev libssl-dev zlib1g-dev
  libcmocka-dev
  python3 python3-yaml curl procps
  nginx-light wrk
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
