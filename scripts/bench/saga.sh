#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# saga.sh -- the saga benchmark: a 3-step saga with local actions on the
# SQLite journal (WAL, synchronous=FULL) and, in the same run, on a
# PostgreSQL journal (a throwaway local cluster, fsync=on,
# synchronous_commit=on; skipped, saying why, without Debian's
# postgresql), printed next to this disk's fsync floor.
# SAGAS=20000 INFLIGHT=1024 RATE=1000 JOURNALS="sqlite pg" by default;
# ORRERY=path picks the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
ORRERY=${ORRERY:-build/orrery}
[ -x "$ORRERY" ] || ORRERY=$(scripts/build.sh release)
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/orrery-saga.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "journal directory: $dir ($(df -T "$dir" | awk 'NR==2{print $2}'))"
"$ORRERY" scripts/bench/saga/bench.lua "$dir"
