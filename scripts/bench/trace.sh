#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# trace.sh -- what tracing costs the HTTP server, side by side in one run:
# one orrery server per mode in $MODES (trace/server.lua: "off" never
# calls trace.configure, "ratio=R" traces at that ratio and exports to an
# OTLP sink, trace/sink.lua), GET / over keep-alive connections, wrk -t1
# -c$CONNS -d$DURATION, the servers interleaved, $RUNS runs. The servers
# are pinned to $SERVER_CPU, wrk and the sink to $WRK_CPU. Reported: the
# server's CPU time per request (utime+stime from /proc before and after,
# divided by the requests completed; the exporter's encoding and posting
# included, since it runs in the same process) and its ratio to the first
# mode's (the median of per-run ratios), then each server's trace.stats().
# instr: instructions per request under callgrind, which a shared machine
# does not move: trace/inproc.lua (server and 50 client connections in one
# process, client side included) run with $INSTR_ROUNDS and 3x as many
# rounds of 50 requests; the difference per extra request, per mode.
#
# Environment:
#   ORRERY=path      use this binary instead of building with build.sh release
#   DURATION=5s CONNS=50 RUNS=3 SERVER_CPU=1 WRK_CPU=0
#   MODES="off ratio=1 ratio=0.01"
#   SECTIONS="cpu instr"  INSTR_ROUNDS=50
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
SCPU=${SERVER_CPU:-1}
WCPU=${WRK_CPU:-0}
MODES=${MODES:-off ratio=1 ratio=0.01}
SECTIONS=${SECTIONS:-cpu instr}
INSTR_ROUNDS=${INSTR_ROUNDS:-50}

scripts/deps.sh wrk valgrind >&2
orrery=${ORRERY:-$(scripts/build.sh release)}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
TCK=$(getconf CLK_TCK)

if [[ " $SECTIONS " == *" cpu "* ]]; then
P_SINK=18190
taskset -c "$WCPU" "$orrery" scripts/bench/trace/sink.lua $P_SINK &
pids+=($!)
declare -A PORT PID R
port=18191
for m in $MODES; do
  PORT[$m]=$port
  taskset -c "$SCPU" "$orrery" scripts/bench/trace/server.lua $port "$m" "http://127.0.0.1:$P_SINK/v1/traces" &
  pids+=($!)
  PID[$m]=$!
  port=$((port + 1))
done
for m in $MODES; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${PORT[$m]}/" >/dev/null && break; sleep 0.1; done
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run PID URL -> "CPU_us_per_request requests_per_second"
run() {
  local t0 t1 out
  out=$(mktemp)
  t0=$(ticks "$1")
  taskset -c "$WCPU" wrk -t1 -c"$CONNS" -d"$DURATION" "$2" >"$out"
  t1=$(ticks "$1")
  awk -v t0="$t0" -v t1="$t1" -v tck="$TCK" '
    / requests in / { n = $1 }
    /Requests\/sec/ { rps = $2 }
    END { printf "%.2f %.0f\n", (t1 - t0) * 1e6 / tck / n, rps }' "$out"
  rm -f "$out"
}

base=${MODES%% *}
for _ in $(seq "$RUNS"); do
  declare -A this=()
  for m in $MODES; do
    read -r us rps <<<"$(run "${PID[$m]}" "http://127.0.0.1:${PORT[$m]}/")"
    R[$m,us]+="$us " R[$m,rps]+="$rps "
    this[$m]=$us
  done
  for m in $MODES; do
    R[$m,ratio]+="$(awk -v a="${this[$m]}" -v b="${this[$base]}" 'BEGIN { printf "%.4f", a / b }') "
  done
done
med() { echo ${R[$1]} | tr ' ' '\n' | median; }

echo "trace: GET /, wrk -t1 -c$CONNS -d$DURATION, one orrery server per mode on CPU $SCPU, median of $RUNS interleaved runs"
echo
printf '| %-12s | %7s | %10s | %9s |\n' mode "req/s" "CPU us/req" "CPU / $base"
printf '|--------------|--------:|-----------:|----------:|\n'
for m in $MODES; do
  printf '| %-12s | %7s | %10s | %9s |\n' "$m" "$(med "$m,rps")" "$(med "$m,us")" "$(printf '%.3fx' "$(med "$m,ratio")")"
done
echo
echo "per run (us/req):"
for m in $MODES; do echo "  $m: ${R[$m,us]}"; done
echo "trace.stats() at the end:"
for m in $MODES; do echo "  $m: $(curl -fs "http://127.0.0.1:${PORT[$m]}/stats")"; done
fi

if [[ " $SECTIONS " == *" instr "* ]]; then
  # ir MODE ROUNDS -> instructions of a whole run
  ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$orrery" scripts/bench/trace/inproc.lua \
      "$1" "$2" 20 2>&1 | awk '/Collected/ { print $4 }'
  }
  echo
  echo "instr: instructions per request (callgrind; server and client in one process), $((2 * INSTR_ROUNDS * 50)) requests measured"
  echo
  printf '| %-12s | %10s | %9s |\n' mode "instr/req" "/ off"
  printf '|--------------|-----------:|----------:|\n'
  base_ir=
  for m in $MODES; do
    arg=${m#ratio=}
    lo=$(ir "$arg" "$INSTR_ROUNDS")
    hi=$(ir "$arg" $((3 * INSTR_ROUNDS)))
    per=$(( (hi - lo) / (2 * INSTR_ROUNDS * 50) ))
    [ -n "$base_ir" ] || base_ir=$per
    printf '| %-12s | %10s | %9s |\n' "$m" "$per" "$(awk -v a="$per" -v b="$base_ir" 'BEGIN { printf "%.3fx", a / b }')"
  done
fi
