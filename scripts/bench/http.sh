#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# http.sh -- HTTP server throughput and CPU cost, side by side in one run:
# orrery, nginx + lua (worker_processes 1, content_by_lua_block) and Go
# net/http (GOMAXPROCS=1), for GET / ("hello world") and GET /json (a small
# JSON object). Each server is pinned to one CPU and wrk to another:
#   wrk -t1 -c$CONNS -d$DURATION --latency
# Reported: requests/s, p99 latency and the server's CPU time per request
# (utime+stime of its processes from /proc before and after, divided by
# the requests completed), then the ratios of orrery to the peers.
#
# Environment:
#   ORRERY=path      use this binary instead of building with build.sh release
#   DURATION=5s      wrk duration per run
#   CONNS=50         keep-alive connections
#   RUNS=3           runs per server and URL, interleaved (median reported)
#   SERVER_CPU=1 WRK_CPU=0   the CPUs to pin to
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
SCPU=${SERVER_CPU:-1}
WCPU=${WRK_CPU:-0}

scripts/deps.sh wrk nginx-light libnginx-mod-http-lua lua-cjson golang-go >&2
orrery=${ORRERY:-$(scripts/build.sh release)}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${GOCACHE:-}" ] || export GOCACHE=$tmp/gocache
TCK=$(getconf CLK_TCK)

# -- servers --
P_ORR=18080 P_NGX=18081 P_GO=18082
taskset -c "$SCPU" "$orrery" scripts/bench/http/server.lua $P_ORR &
pids+=($!)
pid_orr=$!

mkdir -p "$tmp/nginx/logs"
cat > "$tmp/nginx/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  lua_package_cpath "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
  init_by_lua_block { local ok, m = pcall(require, "cjson"); cjson = ok and m or nil }
  server {
    listen 127.0.0.1:$P_NGX;
    location = / {
      default_type "text/plain; charset=utf-8";
      content_by_lua_block { ngx.print("hello world") }
    }
    location = /json {
      default_type application/json;
      content_by_lua_block {
        if cjson then
          ngx.print(cjson.encode({ id = 123, status = "ok", items = { 1, 2, 3 } }))
        else
          ngx.print('{"id":123,"status":"ok","items":[1,2,3]}')
        end
      }
    }
  }
}
NGX
taskset -c "$SCPU" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
pids+=($!)
pid_ngx=$!

go build -o "$tmp/goserver" scripts/bench/http/server.go
GOMAXPROCS=1 taskset -c "$SCPU" "$tmp/goserver" $P_GO &
pids+=($!)
pid_go=$!

for p in $P_ORR $P_NGX $P_GO; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done

# CPU ticks of a process and its children (nginx's worker).
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

# run NAME PID PORT PATH -> "rps p99_ms us_per_req"
run() {
  local pid=$2 url="http://127.0.0.1:$3$4" out=$tmp/wrk.out
  local t0 t1
  t0=$(ticks "$pid")
  taskset -c "$WCPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
  t1=$(ticks "$pid")
  awk -v t0="$t0" -v t1="$t1" -v tck="$TCK" '
    / requests in / { n = $1 }
    /Requests\/sec/ { rps = $2 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 }
               else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }
               p99 = v }
    END { printf "%.0f %.3f %.2f\n", rps, p99, (t1 - t0) * 1e6 / tck / n }' "$out"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A R
for path in / /json; do
  for i in $(seq "$RUNS"); do
    for s in orrery nginx go; do
      case $s in
        orrery) r=$(run $s $pid_orr $P_ORR $path) ;;
        nginx) r=$(run $s $pid_ngx $P_NGX $path) ;;
        go) r=$(run $s $pid_go $P_GO $path) ;;
      esac
      R[$s,$path,rps]+="$(echo "$r" | cut -d' ' -f1) "
      R[$s,$path,p99]+="$(echo "$r" | cut -d' ' -f2) "
      R[$s,$path,us]+="$(echo "$r" | cut -d' ' -f3) "
    done
  done
done

med() { echo ${R[$1]} | tr ' ' '\n' | median; }
echo
echo "wrk -t1 -c$CONNS -d$DURATION, server on CPU $SCPU, wrk on CPU $WCPU, median of $RUNS runs"
echo
printf '| %-5s | %-6s | %9s | %7s | %10s | %12s | %9s |\n' URL server "req/s" "p99 ms" "CPU us/req" "CPU / nginx" "CPU / Go"
printf '|-------|--------|----------:|--------:|-----------:|-------------:|----------:|\n'
for path in / /json; do
  o=$(med "orrery,$path,us") n=$(med "nginx,$path,us") g=$(med "go,$path,us")
  for s in orrery nginx go; do
    us=$(med "$s,$path,us")
    rn=$(awk -v a="$us" -v b="$n" 'BEGIN { printf "%.2fx", a / b }')
    rg=$(awk -v a="$us" -v b="$g" 'BEGIN { printf "%.2fx", a / b }')
    printf '| %-5s | %-6s | %9s | %7s | %10s | %12s | %9s |\n' "$path" "$s" \
      "$(med "$s,$path,rps")" "$(med "$s,$path,p99")" "$us" "$rn" "$rg"
  done
done
