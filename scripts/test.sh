#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test.sh -- installs what is missing, builds, and runs the whole suite:
# the Lua tests with the release build, then again with the
# AddressSanitizer + UndefinedBehaviorSanitizer build (leak checks on),
# then each libFuzzer target for FUZZ_SECONDS (default 20) under ASan.
# ORRERY_SKIP_SANITIZE=1 or ORRERY_SKIP_FUZZ=1 skip those stages.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# The real peers some tests start on loopback (nginx as an upstream,
# promtool and a strict OpenMetrics parser, sslscan, PostgreSQL, and Go for
# `go tool pprof` reading our profiles), installed here rather
# than inside a test file, whose run has a time limit.
scripts/deps.sh nginx prometheus python3-prometheus-client sslscan postgresql golang-go
bin=$(scripts/build.sh release)
echo "== tests (release)"
"$bin" test tests
if [ "${ORRERY_SKIP_SANITIZE:-}" != 1 ]; then
  echo "== tests (ASan + UBSan)"
  asan=$(scripts/build.sh sanitize)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ORRERY_SANITIZED=1 "$asan" test tests
fi
if [ "${ORRERY_SKIP_FUZZ:-}" != 1 ]; then
  echo "== fuzzing (${FUZZ_SECONDS:-20}s per target)"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh
fi
