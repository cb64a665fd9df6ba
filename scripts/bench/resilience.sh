#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# resilience.sh [iterations] -- runs scripts/bench/resilience.lua (ns per
# call of breaker, limiter and bulkhead hot paths) with build/orrery,
# building the release binary first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build/orrery
if [ ! -x "$bin" ]; then bin=$(scripts/build.sh release); fi
exec "$bin" scripts/bench/resilience.lua "$@"
