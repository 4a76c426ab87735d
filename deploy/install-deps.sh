#!/usr/bin/env bash
# Installs every build and test dependency of sdgate from Debian's packages.
# Idempotent: packages already present are left alone, so re-running is cheap.
# Usage: deploy/install-deps.sh            (needs root or sudo)
# Then, for the browser end-to-end test, `npm ci --prefix tests/e2e`
# (playwright-core, pinned by tests/e2e/package-lock.json; it drives Debian's
# own chromium, so no browser is downloaded), only when node_modules is missing.
# The CUDA toolkit is not a Debian package here: CMake uses nvcc when it finds
# one (/usr/local/cuda/bin or PATH) and builds the CPU engine alone otherwise.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libh2o-evloop-dev libwebsockets-dev libcurl4-openssl-dev libjansson-dev
  libsqlite3-dev sqlite3 libstb-dev libssl-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev
  libcmocka-dev
  libpq-dev postgresql
  python3 python3-yaml curl procps
  nginx-light wrk systemd
  clang libclang-rt-14-dev
  nodejs chromium
)
# Debian's nodejs has npm apart; other builds of nodejs (NodeSource) ship it
# inside and conflict with Debian's npm package.
if ! command -v npm >/dev/null 2>&1; then PKGS+=(npm); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "install-deps: done"
fi

# The browser test's one npm dependency (no browser download: it uses /usr/bin/chromium).
E2E="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e"
if [ -f "$E2E/package-lock.json" ] && [ ! -d "$E2E/node_modules/playwright-core" ]; then
  echo "install-deps: npm ci --prefix tests/e2e"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$E2E" --no-audit --no-fund --loglevel=error
fi
