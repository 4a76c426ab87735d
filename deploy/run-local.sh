#!/usr/bin/env bash
# README's first command: installs dependencies, builds sdgate (release build
# in build/ unless SDGATE_BUILD says otherwise) and runs the local
# marketplace on loopback:
#
#   sdgate-balancer  127.0.0.1:7860   job queue + router (SQLite under the state dir), A1111 API
#   sdgate-backend   127.0.0.1:7861   "Nimbus Compute", Frankfurt   h100     \
#   sdgate-backend   127.0.0.1:7862   "Lakeside GPU Co-op", Austin  a100      > register with the balancer
#   sdgate-backend   127.0.0.1:7863   "Shibuya Render", Tokyo       rtx3090  /
#   sdgate-gateway   127.0.0.1:8080   the web UI and its websocket
#
# The three backends run the native engine on this machine (its GPU if CUDA
# finds one, else the CPU). Their GPU classes are labels (--gpu-class) and
# their different speeds are SIMULATED with --pace-ms-per-step, a testing
# aid; the board marks them "simulated".
#
# Stop everything with Ctrl-C. Environment: SDGATE_PORT (gateway, 8080),
# SDGATE_BALANCER_PORT (7860, backends on the next three ports),
# SDGATE_STATE_DIR (database and logs; default ~/.local/state/sdgate),
# SDGATE_BUILD (build dir), SDGATE_LISTEN_HOST (127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
BUILD=${SDGATE_BUILD:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target sdgate-backend sdgate-balancer sdgate-gateway

HOST=${SDGATE_LISTEN_HOST:-127.0.0.1}
GW_PORT=${SDGATE_PORT:-8080}
BAL_PORT=${SDGATE_BALANCER_PORT:-7860}
STATE=${SDGATE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/sdgate}
LOGS="$STATE/logs"
mkdir -p "$LOGS"
BAL_URL="http://127.0.0.1:$BAL_PORT"
# Fresh tokens each run: providers need one to register, the gateway the other
# to name its end clients (per-client limits). The programs read them from the
# environment (SDGATE_PROVIDER_TOKEN for the balancer, SDGATE_TOKEN for the
# backends, SDGATE_ADMIN_TOKEN for both the balancer and the gateway), so they
# never show in `ps`.
SDGATE_PROVIDER_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
SDGATE_ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
SDGATE_TOKEN=$SDGATE_PROVIDER_TOKEN
export SDGATE_PROVIDER_TOKEN SDGATE_ADMIN_TOKEN SDGATE_TOKEN

pids=()
names=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  echo
  echo "sdgate: stopping..."
  # One at a time: the gateway (it cancels its clients' jobs), the balancer
  # (it closes its connections to the backends), then the backends. Started
  # order is balancer, backends..., gateway.
  local order=()
  local last=$((${#pids[@]} - 1))
  if [ "$last" -ge 1 ] && [ "${names[$last]}" = gateway ]; then order+=("$last"); fi
  [ "$last" -ge 0 ] && order+=(0)
  for ((i = 1; i <= last; i++)); do [ "${names[$i]}" != gateway ] && order+=("$i"); done
  for i in "${order[@]}"; do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    if wait "${pids[$i]}" 2>/dev/null; then
      echo "sdgate: ${names[$i]} stopped"
    else
      echo "sdgate: ${names[$i]} exited with code $? (log: $LOGS/${names[$i]}.log)"
    fi
  done
}
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT

# start NAME READY_URL COMMAND...: runs it in the background, logging to
# $LOGS/NAME.log, and waits until READY_URL answers. Each runs in its own
# session (setsid), so Ctrl-C reaches only this script, which then stops
# them in order.
start() {
  local name=$1 ready=$2
  shift 2
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  pids+=($!)
  names+=("$name")
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null --max-time 1 "$ready" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "sdgate: $name failed to start; last lines of $LOGS/$name.log:" >&2
      tail -n 20 "$LOGS/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "sdgate: $name did not answer $ready within 30 s (log: $LOGS/$name.log)" >&2
  exit 1
}

start balancer "$BAL_URL/healthz" \
  "$BUILD/balancer/sdgate-balancer" --listen "127.0.0.1:$BAL_PORT" --db "$STATE/balancer.db" \
  --allow-private-backends --heartbeat-interval 5

# name | location | country | GPU class (a label) | price/h | SIMULATED ms per step
BACKENDS=(
  "Nimbus Compute|Frankfurt, DE|DE|h100|2.49|15"
  "Lakeside GPU Co-op|Austin, US|US|a100|1.29|40"
  "Shibuya Render|Tokyo, JP|JP|rtx3090|0.39|90"
)
port=$((BAL_PORT + 1))
for spec in "${BACKENDS[@]}"; do
  IFS='|' read -r provider location country gpu price pace <<<"$spec"
  start "backend-$gpu" "http://127.0.0.1:$port/internal/ping" \
    "$BUILD/backend/sdgate-backend" --listen "127.0.0.1:$port" --provider "$provider" \
    --location "$location" --country "$country" --gpu-class "$gpu" --price-per-hour "$price" \
    --pace-ms-per-step "$pace" --balancer "$BAL_URL"
  port=$((port + 1))
done

start gateway "http://127.0.0.1:$GW_PORT/healthz" \
  "$BUILD/gateway/sdgate-gateway" --listen "$HOST:$GW_PORT" --balancer "$BAL_URL"

cat <<EOF

sdgate: the local marketplace is running.
  Web UI:           http://$HOST:$GW_PORT/
  A1111 API:        $BAL_URL   (e.g. curl -s $BAL_URL/sdapi/v1/samplers)
  Providers board:  $BAL_URL/v1/backends
  Backends:         h100 (Frankfurt), a100 (Austin), rtx3090 (Tokyo) on ports $((BAL_PORT + 1))-$((BAL_PORT + 3)):
                    GPU classes are labels and their speeds are SIMULATED (--pace-ms-per-step 15/40/90 ms,
                    a testing aid) on top of this machine's own engine; the board marks them "simulated".
  State and logs:   $STATE
Press Ctrl-C to stop.
EOF

# Until Ctrl-C, or until one of them dies on its own.
set +e
wait -n "${pids[@]}"
code=$?
if [ "$stopping" = 0 ]; then
  echo "sdgate: a program exited on its own (code $code); see $LOGS" >&2
fi
exit "$code"
