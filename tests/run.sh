#!/usr/bin/env bash
# README's test command: installs what the tests need, builds everything with
# AddressSanitizer + UndefinedBehaviorSanitizer into build-test/, and runs the
# whole suite (unit, integration over loopback, kernel checker) through ctest,
# then the fuzz targets (tests/fuzz/run.sh).
# Warnings are errors (-Werror) unless SDGATE_WERROR=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh

BUILD=${SDGATE_TEST_BUILD:-build-test}
WERROR=${SDGATE_WERROR:-ON}   # warnings are errors here and in CI; SDGATE_WERROR=OFF to relax locally
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDGATE_SANITIZE=ON -DSDGATE_WERROR="$WERROR" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

# ASan's leak checker runs too; UBSan aborts on the first error (-fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# --no-tests=error: a build that registered no tests is a failure, not a pass.
# A test that exits 77 (kernels_check without a GPU) is reported as Skipped
# and does not fail the run. Three tests per two cores: the integration tests
# mostly wait (paced backends, timeouts, heartbeats), at -j2 on 2 cores the
# cores were idle half the time; at -j4 timing checks (test_balancer_fastest's
# ratio, test_gateway_img2img's stalled-message cut) failed on a loaded
# machine. SDGATE_TEST_JOBS sets it.
JOBS=${SDGATE_TEST_JOBS:-$(( ($(nproc) * 3 + 1) / 2 ))}
(cd "$BUILD" && ctest --output-on-failure --no-tests=error --timeout 300 -j"$JOBS")

# Every parser of network input under libFuzzer (clang, ASan+UBSan), a bounded
# time each; regression inputs of past crashes are replayed first.
bash tests/fuzz/run.sh
