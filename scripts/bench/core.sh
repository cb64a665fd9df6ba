#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# core.sh -- the core runtime benchmarks, run side by side in one run:
# orrery against Go (GOMAXPROCS=1), with Tarantool fibers and plain LuaJIT
# coroutines as further references. Prints one Markdown table.
#
# Environment:
#   ORRERY=path    use this binary instead of building with build.sh release
#   RUNS=3         runs per benchmark and peer (the median is reported)
#   SPAWN_RUNS=2   runs of the 1M spawn benchmark (Go takes ~15 s a run)
#   BENCH_CPU=1    the CPU every process is pinned to ("none": no pinning)
#   TT_MAX=30000   the most fibers Tarantool is asked for (see below)
#   QUICK=1        small sizes, one run: a smoke test of this script
#
# Every benchmark prints lines "RESULT <bench> <metric> <value>"; the runs
# are interleaved peer by peer so that noise on this shared machine falls on
# every peer alike. Tarantool gives each fiber its own mmap'd stack plus a
# guard page, two memory mappings each, so vm.max_map_count (65530 by
# default) stops it near 32k fibers: the spawn and sleep benchmarks run it
# with TT_MAX fibers and the table marks those figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=scripts/bench/core
RUNS=${RUNS:-3}
SPAWN_RUNS=${SPAWN_RUNS:-2}
CPU=${BENCH_CPU:-1}
TT_MAX=${TT_MAX:-30000}
SPAWN_N=1000000 PP_N=1000000 SLEEP_N=100000 SIEVE_N=2000
if [ "${QUICK:-0}" = 1 ]; then
  RUNS=1 SPAWN_RUNS=1 SPAWN_N=20000 PP_N=100000 SLEEP_N=2000 SIEVE_N=300
  TT_MAX=2000
fi

# luajit2 is the OpenResty branch that orrery links against; Debian's
# `luajit` package would replace libluajit2-5.1-dev and break the build.
scripts/deps.sh golang-go tarantool luajit2 >&2
orrery=${ORRERY:-$(scripts/build.sh release)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then export GOCACHE=$tmp/gocache; fi
for b in spawn pingpong sleep sieve; do
  go build -o "$tmp/$b" "$dir/$b.go"
done
export GOMAXPROCS=1

pin() {
  if [ "$CPU" != none ] && command -v taskset >/dev/null; then
    taskset -c "$CPU" "$@"
  else
    "$@"
  fi
}

# run PEER BENCH N: runs one benchmark once and appends "peer bench metric
# value" lines to $tmp/results; a failure is recorded, not fatal.
run() {
  local peer=$1 bench=$2 n=$3 out
  case $peer in
    orrery) set -- "$orrery" "$dir/$bench.lua" "$n" ;;
    go) set -- "$tmp/$bench" "$n" ;;
    tarantool) set -- tarantool "$dir/${bench}_tarantool.lua" "$n" ;;
    luajit) set -- luajit "$dir/${bench}_luajit.lua" "$n" ;;
  esac
  if out=$(pin timeout 300 "$@" 2>"$tmp/stderr"); then
    printf '%s\n' "$out" | awk -v p="$peer" '$1 == "RESULT" { print p, $2, $3, $4 }' >>"$tmp/results"
  else
    echo "core.sh: $peer $bench failed: $(tail -n 3 "$tmp/stderr")" >&2
  fi
  echo "  $peer $bench: $(printf '%s' "$out" | awk '$1 == "RESULT" { printf "%s=%s ", $3, $4 }')" >&2
}

: >"$tmp/results"
tt_spawn=$((SPAWN_N < TT_MAX ? SPAWN_N : TT_MAX))
tt_sleep=$((SLEEP_N < TT_MAX ? SLEEP_N : TT_MAX))
for r in $(seq "$SPAWN_RUNS"); do
  echo "spawn, run $r" >&2
  run orrery spawn "$SPAWN_N"
  run go spawn "$SPAWN_N"
  run tarantool spawn "$tt_spawn"
  run luajit spawn "$SPAWN_N"
done
for r in $(seq "$RUNS"); do
  echo "pingpong, run $r" >&2
  for p in orrery go tarantool luajit; do run "$p" pingpong "$PP_N"; done
done
for r in $(seq "$RUNS"); do
  echo "sleep, run $r" >&2
  run orrery sleep "$SLEEP_N"
  run go sleep "$SLEEP_N"
  run tarantool sleep "$tt_sleep"
done
for r in $(seq "$RUNS"); do
  echo "sieve, run $r" >&2
  for p in orrery go tarantool luajit; do run "$p" sieve "$SIEVE_N"; done
done

# med PEER BENCH METRIC: the median of the recorded values, or "-".
med() {
  awk -v p="$1" -v b="$2" -v m="$3" '$1 == p && $2 == b && $3 == m { print $4 }' "$tmp/results" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fmt() { [ "$1" = - ] && echo - || awk -v v="$1" 'BEGIN { a = v < 0 ? -v : v; printf(a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : a >= 1 ? "%.2f" : "%.3f", v) }'; }

# row LABEL BENCH METRIC TARGET: TARGET is "faster:X" (Go/orrery >= X),
# "max:V" (orrery <= V) or "-". TT_MARK flags Tarantool figures at fewer
# fibers than the others.
row() {
  local label=$1 bench=$2 metric=$3 target=$4 mark=${5:-}
  local o g t l ratio want met
  o=$(med orrery "$bench" "$metric")
  g=$(med go "$bench" "$metric")
  t=$(med tarantool "$bench" "$metric")
  l=$(med luajit "$bench" "$metric")
  ratio=-
  if [ "$o" != - ] && [ "$g" != - ]; then
    ratio=$(awk -v o="$o" -v g="$g" 'BEGIN { if (o > 0 && g > 0) printf "%.2fx", g / o; else print "-" }')
  fi
  want=- met=-
  case $target in
    faster:*)
      want="Go/orrery ≥ ${target#faster:}"
      [ "$ratio" != - ] && met=$(awk -v r="${ratio%x}" -v x="${target#faster:}" 'BEGIN { print (r >= x) ? "yes" : "**no**" }') ;;
    max:*)
      want="≤ ${target#max:}"
      [ "$o" != - ] && met=$(awk -v o="$o" -v x="${target#max:}" 'BEGIN { print (o <= x) ? "yes" : "**no**" }') ;;
  esac
  [ "$t" != - ] && t="$(fmt "$t")$mark"
  [ "$(med tarantool "$bench" failed_at)" != - ] && t="failed at $(med tarantool "$bench" failed_at) fibers"
  echo "| $label | $(fmt "$o") | $(fmt "$g") | $ratio | $want | $met | $t | $(fmt "$l") |"
}

tt_mark() { [ "$1" -lt "$2" ] && echo " (${1} fibers)" || true; }
k() { awk -v n="$1" 'BEGIN { if (n >= 1000000) printf "%gM", n / 1000000; else if (n >= 1000) printf "%gk", n / 1000; else print n }'; }

echo
echo "$("$orrery" -v 2>/dev/null | head -n 1) ($(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet 2>/dev/null || echo ", with local changes")),"
echo "$(go version | cut -d' ' -f3) GOMAXPROCS=1, tarantool $(tarantool --version | head -n 1 | cut -d' ' -f2),"
echo "$(luajit -v | cut -d' ' -f1-2) (luajit2); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores,"
echo "pinned to CPU $CPU; median of $RUNS runs ($SPAWN_RUNS for spawn); $(date -u +%Y-%m-%d)."
echo
echo "| benchmark | orrery | Go | Go/orrery | target | met | Tarantool | LuaJIT |"
echo "|---|---:|---:|---:|---|---|---:|---:|"
row "spawn $(k "$SPAWN_N") parked: wall s" spawn seconds faster:4 "$(tt_mark "$tt_spawn" "$SPAWN_N")"
row "spawn $(k "$SPAWN_N") parked: bytes each" spawn bytes_per_co max:1024 "$(tt_mark "$tt_spawn" "$SPAWN_N")"
row "ping-pong $(k "$PP_N"): ns per round trip" pingpong ns_per_rt faster:2
row "$(k "$SLEEP_N") sleeps: ms past last deadline" sleep past_last_deadline_ms faster:2 "$(tt_mark "$tt_sleep" "$SLEEP_N")"
row "$(k "$SLEEP_N") sleeps: last wake vs own deadline, ms" sleep last_late_ms - "$(tt_mark "$tt_sleep" "$SLEEP_N")"
row "$(k "$SLEEP_N") sleeps: mean lateness, ms" sleep mean_late_ms - "$(tt_mark "$tt_sleep" "$SLEEP_N")"
row "$(k "$SLEEP_N") sleeps: peak RSS growth, MB" sleep rss_mb - "$(tt_mark "$tt_sleep" "$SLEEP_N")"
row "sieve, $(k "$SIEVE_N") primes: ms" sieve ms faster:1.5

primes=$(awk '$2 == "sieve" && $3 == "last_prime" { print $4 }' "$tmp/results" | sort -u)
if [ "$(printf '%s\n' "$primes" | grep -c .)" -gt 1 ]; then
  echo "core.sh: the sieves disagree on the last prime: $primes" >&2
  exit 1
fi
