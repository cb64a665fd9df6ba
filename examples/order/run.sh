#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run.sh -- starts the four services of the order example on 8080-8083
# with their databases in ./data (README.md). Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")"
ORRERY=${ORRERY:-../../build/orrery}
mkdir -p data
pids=()
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
"$ORRERY" payment.lua --port 8081 --db data/payment.db & pids+=($!)
"$ORRERY" inventory.lua --port 8082 --db data/inventory.db & pids+=($!)
"$ORRERY" shipping.lua --port 8083 --db data/shipping.db & pids+=($!)
"$ORRERY" order.lua --port 8080 --db data/order.db "$@" & pids+=($!)
wait
