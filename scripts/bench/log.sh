#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# log.sh [lines] -- runs scripts/bench/log.lua (ns of the caller's time per
# orrery.log line, and ns per line of the write) with build/orrery,
# building the release binary first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build/orrery
if [ ! -x "$bin" ]; then bin=$(scripts/build.sh release); fi
exec "$bin" scripts/bench/log.lua "$@"
