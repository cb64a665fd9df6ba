#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# metrics.sh [iterations] -- runs scripts/bench/metrics.lua (ns per
# counter, gauge and histogram update, and per exposition) with
# build/orrery, building the release binary first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build/orrery
if [ ! -x "$bin" ]; then bin=$(scripts/build.sh release); fi
exec "$bin" scripts/bench/metrics.lua "$@"
