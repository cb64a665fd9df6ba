#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# pg.sh [seconds] -- runs scripts/bench/pg.lua (INSERTs/s on a throwaway
# local PostgreSQL cluster with synchronous_commit = on: one coroutine, 256
# coroutines through group commit, one transaction per statement, and
# pgbench) with build/orrery, building the release binary first if it is
# missing. Needs Debian's postgresql (scripts/deps.sh postgresql).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build/orrery
if [ ! -x "$bin" ]; then bin=$(scripts/build.sh release); fi
exec "$bin" scripts/bench/pg.lua "$@"
