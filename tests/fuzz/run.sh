#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + coverage, CUDA off)
# into build-fuzz/, replays every regression input in tests/fuzz/regressions/
# (each a crash a fuzzer once found), then fuzzes each target for
# SDGATE_FUZZ_SECONDS (default 10) from tests/fuzz/seeds/, two at a time.
# A crash fails the run and leaves its input under build-fuzz/fuzz-artifacts/:
# copy it to tests/fuzz/regressions/<target>/ once fixed.
# Called by tests/run.sh; runnable alone from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${SDGATE_FUZZ_BUILD:-build-fuzz}
SECS=${SDGATE_FUZZ_SECONDS:-10}
TARGETS=(txt2img gateway_message sse prompt config balancer_answer image pnginfo)

CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDGATE_FUZZ=ON -DSDGATE_SANITIZE=ON \
  -DWITH_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ART="$BUILD/fuzz-artifacts"
mkdir -p "$ART"

flags_for() { # config_parse explains each refusal on stderr: keep libFuzzer's own output only
  if [ "$1" = config ]; then echo "-close_fd_mask=2"; fi
}

for t in "${TARGETS[@]}"; do
  reg="tests/fuzz/regressions/$t"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    echo "fuzz: $t: replaying $(ls "$reg" | wc -l) regression input(s)"
    "$BUILD/tests/fuzz/fuzz_$t" $(flags_for "$t") -runs=2 "$reg"/* >"$ART/$t-regressions.log" 2>&1 ||
      { tail -40 "$ART/$t-regressions.log"; echo "fuzz: $t: a regression input fails again"; exit 1; }
  fi
done

run_one() {
  local t=$1 corpus="$BUILD/fuzz-corpus/$1"
  mkdir -p "$corpus"
  if "$BUILD/tests/fuzz/fuzz_$t" $(flags_for "$t") -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$ART/$t-" -print_final_stats=1 "$corpus" "tests/fuzz/seeds/$t" >"$ART/$t.log" 2>&1; then
    echo "fuzz: $t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$ART/$t.log" | tail -1), no crash"
  else
    tail -60 "$ART/$t.log"
    echo "fuzz: $t: CRASH — input saved under $ART/$t-*"
    return 1
  fi
}

status=0
pids=()
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
