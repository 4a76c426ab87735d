#!/usr/bin/env bash
# README's first command: installs dependencies, builds sdgate (release build
# in build/), and runs the local marketplace on loopback.
# Today that is one native backend speaking the AUTOMATIC1111 API on
# http://127.0.0.1:7861 (the balancer and gateway join it as they are built).
# Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target sdgate-backend

PORT=${SDGATE_BACKEND_PORT:-7861}
echo "sdgate: A1111-compatible backend on http://127.0.0.1:$PORT  (try: curl -s http://127.0.0.1:$PORT/sdgate/v1/info)"
exec build/backend/sdgate-backend --listen "127.0.0.1:$PORT" --provider "local" --location "This machine" "$@"
