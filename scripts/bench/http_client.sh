#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# http_client.sh -- HTTP client costs side by side in one run: orrery's
# client (50 coroutines, one pool), Go's net/http client (GOMAXPROCS=1, 50
# goroutines) and wrk -t1 -c50 as the floor, each doing keep-alive GETs
# against one local nginx that answers 12 bytes. The client is pinned to
# one CPU, nginx to the other; reported: requests/s and the client's CPU
# time per request (user + system, from /proc), median of RUNS
# interleaved runs, and the ratios to Go and to wrk.
#
# Environment: ORRERY=path (default: build with build.sh release), RUNS=3,
# N=200000 requests per run, CONNS=50, CLIENT_CPU=1, SERVER_CPU=0,
# PORT=18090 (nginx's).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3} N=${N:-200000} CONNS=${CONNS:-50}
CCPU=${CLIENT_CPU:-1} SCPU=${SERVER_CPU:-0}
scripts/deps.sh wrk nginx-light golang-go >&2
orrery=${ORRERY:-$(scripts/build.sh release)}
tmp=$(mktemp -d)
pid_ngx=
cleanup() {
  [ -n "$pid_ngx" ] && kill "$pid_ngx" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${GOCACHE:-}" ] || export GOCACHE=$tmp/gocache
TCK=$(getconf CLK_TCK)
PORT=${PORT:-18090}
mkdir -p "$tmp/nginx/logs"
cat > "$tmp/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT;
    location = / { default_type text/plain; return 200 "hello world\n"; }
  }
}
NGX
taskset -c "$SCPU" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
pid_ngx=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
# The port must be this nginx's (another benchmark may hold it: PORT=...).
kill -0 "$pid_ngx" 2>/dev/null && [ "$(curl -fs "http://127.0.0.1:$PORT/")" = "hello world" ] ||
  { echo "http_client.sh: nginx did not start on port $PORT (in use? set PORT)" >&2; exit 1; }
go build -o "$tmp/goclient" scripts/bench/http_client/client.go
URL=http://127.0.0.1:$PORT/

# run PEER -> "requests seconds cpu_seconds" of one run. The CPU time is
# the subshell's children's (user + system), read once the client exited.
run() {
  local out=$tmp/out ticks
  ticks=$(
    case $1 in
      orrery) taskset -c "$CCPU" "$orrery" scripts/bench/http_client/client.lua "$N" "$CONNS" "$URL" >"$out" ;;
      go) GOMAXPROCS=1 taskset -c "$CCPU" "$tmp/goclient" "$N" "$CONNS" "$URL" >"$out" ;;
      wrk) taskset -c "$CCPU" wrk -t1 -c"$CONNS" -d"$WRK_SECS"s "$URL" >"$out" ;;
    esac
    awk '{ print $16 + $17 }' /proc/$BASHPID/stat
  )
  case $1 in
    wrk) awk -v t="$ticks" -v k="$TCK" '/ requests in /{ n = $1; s = $4; sub(/s,/, "", s) }
      END { printf "%d %s %.4f\n", n, s, t / k }' "$out" ;;
    *) awk -v t="$ticks" -v k="$TCK" '/^RESULT/{ printf "%d %s %.4f\n", $4, $6, t / k }' "$out" ;;
  esac
}

WRK_SECS=5
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: >"$tmp/results"
for r in $(seq "$RUNS"); do
  for peer in orrery go wrk; do
    set -- $(run $peer)
    # requests, seconds, cpu seconds -> rps, cpu us per request
    awk -v p=$peer -v n="$1" -v s="$2" -v c="$3" 'BEGIN { printf "%s %.0f %.3f\n", p, n / s, c * 1e6 / n }' >>"$tmp/results"
  done
done
printf '\nHTTP client: %d keep-alive GETs x %d runs, %d concurrent, nginx answering 12 bytes; client on CPU %s, nginx on CPU %s; median of %d\n\n' \
  "$N" "$RUNS" "$CONNS" "$CCPU" "$SCPU" "$RUNS"
echo "| client | req/s | client CPU us/req | CPU / Go | CPU / wrk |"
echo "|---|---:|---:|---:|---:|"
for peer in orrery go wrk; do
  rps=$(awk -v p=$peer '$1 == p { print $2 }' "$tmp/results" | median)
  cpu=$(awk -v p=$peer '$1 == p { print $3 }' "$tmp/results" | median)
  eval "cpu_$peer=$cpu"
  echo "$peer $rps $cpu" >>"$tmp/table"
done
while read -r peer rps cpu; do
  awk -v p=$peer -v r="$rps" -v c="$cpu" -v g="$cpu_go" -v w="$cpu_wrk" \
    'BEGIN { printf "| %s | %d | %.2f | %.2fx | %.2fx |\n", p, r, c, c / g, c / w }'
done <"$tmp/table"
echo
echo "per run (peer req/s us/req):"
sed 's/^/  /' "$tmp/results"
