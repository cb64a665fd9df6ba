#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# http.sh -- HTTP server costs side by side in one run: orrery, nginx + lua
# (worker_processes 1, content_by_lua_block) and Go net/http (GOMAXPROCS=1).
#
# cpu:  GET / ("hello world") and GET /json (a small JSON object encoded
#       per request) over keep-alive connections. Each server is pinned to
#       one CPU and wrk to another: wrk -t1 -c$CONNS -d$DURATION --latency,
#       the servers interleaved, median of $RUNS runs. Reported: requests/s,
#       p99 latency and the server's CPU time per request (utime+stime of
#       its processes from /proc before and after, divided by the requests
#       completed), then the ratios of CPU and p99 to nginx's and Go's. A
#       ratio is the median of the per-run ratios: the three servers of one
#       run are measured back to back, so that a change in the speed of a
#       shared machine between runs does not land on one server only.
# idle: $IDLE_CONNS keep-alive connections opened from one client process
#       (http/idle.go), one request on each, then held idle. Reported: the
#       server's RSS before and after, per connection.
# slow: slowhttptest (slowloris: slow request heads) holds $SLOW_CONNS
#       connections to orrery while wrk -t1 -c10 measures a normal client.
#       Reported: the normal client's requests/s and p99 without and with
#       the attack, and when the server shed the slow connections
#       (read_header_timeout, 10 s by default).
# obs:  what observability costs orrery on GET /: one orrery server per
#       mode in $OBS_MODES (server.lua's FEATURES: "off", "metrics",
#       "log", "metrics,log", ...), all pinned to the server CPU, measured
#       as in cpu, interleaved, $RUNS runs, and the peer: nginx+Lua with
#       its access log off, on, and on with a 64 kB buffer (OBS_NGINX=0
#       leaves them out). Reported:
#       CPU time per request per mode and its ratio to "off" (nginx's to
#       nginx without its log), the median of per-run ratios. The access
#       logs go to files in the temporary directory. Not in the default
#       SECTIONS.
#
# Environment:
#   ORRERY=path      use this binary instead of building with build.sh release
#   SECTIONS="cpu idle slow"   which parts to run
#   DURATION=5s      wrk duration per run      CONNS=50    connections
#   RUNS=3           runs per server and URL, interleaved (median reported)
#   SERVER_CPU=1 WRK_CPU=0   the CPUs to pin to
#   IDLE_CONNS=10000 SLOW_CONNS=500 SLOW_SECS=10
#   OBS_MODES="off metrics log metrics,log"   the obs section's servers
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
SCPU=${SERVER_CPU:-1}
WCPU=${WRK_CPU:-0}
SECTIONS=${SECTIONS:-cpu idle slow}
IDLE_CONNS=${IDLE_CONNS:-10000}
SLOW_CONNS=${SLOW_CONNS:-500}
SLOW_SECS=${SLOW_SECS:-10}
OBS_MODES=${OBS_MODES:-off metrics log metrics,log}

scripts/deps.sh wrk nginx-light libnginx-mod-http-lua lua-cjson golang-go slowhttptest >&2
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

# Every process started from here may open as many files as allowed.
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
if [ "$IDLE_CONNS" -gt $((nofile - 100)) ]; then
  echo "http.sh: open file limit $nofile: IDLE_CONNS lowered to $((nofile - 100))" >&2
  IDLE_CONNS=$((nofile - 100))
fi

# -- servers --
P_ORR=18080 P_NGX=18081 P_GO=18082
taskset -c "$SCPU" "$orrery" scripts/bench/http/server.lua $P_ORR $((IDLE_CONNS + 1000)) &
pids+=($!)
pid_orr=$!

mkdir -p "$tmp/nginx/logs"
cat > "$tmp/nginx/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections $((IDLE_CONNS + 1000)); }
http {
  access_log off;
  keepalive_requests 1000000;
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
go build -o "$tmp/idle" scripts/bench/http/idle.go
GOMAXPROCS=1 taskset -c "$SCPU" "$tmp/goserver" $P_GO &
pids+=($!)
pid_go=$!

for p in $P_ORR $P_NGX $P_GO; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done

pid_of() { case $1 in orrery) echo $pid_orr ;; nginx) echo $pid_ngx ;; go) echo $pid_go ;; esac; }
port_of() { case $1 in orrery) echo $P_ORR ;; nginx) echo $P_NGX ;; go) echo $P_GO ;; esac; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# wrk_run URL CONNS SECONDS -> "requests rps p99_ms" from wrk --latency
wrk_run() {
  local out=$tmp/wrk.out
  taskset -c "$WCPU" wrk -t1 -c"$2" -d"$3" --latency "$1" >"$out"
  awk '
    / requests in / { n = $1 }
    /Requests\/sec/ { rps = $2 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 }
               else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }
               p99 = v }
    END { printf "%d %.0f %.3f\n", n, rps, p99 }' "$out"
}

# CPU ticks of a process and its children (nginx's worker).
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

# RSS in KB of a process and its children.
rss_kb() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
  done
  echo $total
}

# -- cpu --
if [[ " $SECTIONS " == *" cpu "* ]]; then
  # cpu_run PID URL -> "rps p99_ms us_per_req"
  cpu_run() {
    local t0 t1 r
    t0=$(ticks "$1")
    r=$(wrk_run "$2" "$CONNS" "$DURATION")
    t1=$(ticks "$1")
    echo "$r" | awk -v t0="$t0" -v t1="$t1" -v tck="$TCK" \
      '{ printf "%s %s %.2f\n", $2, $3, (t1 - t0) * 1e6 / tck / $1 }'
  }
  declare -A R
  for path in / /json; do
    for _ in $(seq "$RUNS"); do
      declare -A run=()
      for s in orrery nginx go; do
        r=$(cpu_run "$(pid_of $s)" "http://127.0.0.1:$(port_of $s)$path")
        read -r rps p99 us <<<"$r"
        R[$s,$path,rps]+="$rps " R[$s,$path,p99]+="$p99 " R[$s,$path,us]+="$us "
        run[$s,us]=$us run[$s,p99]=$p99
      done
      for s in orrery nginx go; do
        for k in us p99; do
          R[$s,$path,$k/nginx]+="$(ratio "${run[$s,$k]}" "${run[nginx,$k]}" | tr -d x) "
          R[$s,$path,$k/go]+="$(ratio "${run[$s,$k]}" "${run[go,$k]}" | tr -d x) "
        done
      done
    done
  done
  med() { echo ${R[$1]} | tr ' ' '\n' | median; }
  medx() { printf '%.2fx' "$(med "$1")"; }
  echo
  echo "cpu: wrk -t1 -c$CONNS -d$DURATION --latency, server on CPU $SCPU, wrk on CPU $WCPU, median of $RUNS interleaved runs"
  echo
  printf '| %-5s | %-6s | %7s | %7s | %10s | %11s | %8s | %11s | %8s |\n' URL server "req/s" "p99 ms" \
    "CPU us/req" "CPU / nginx" "CPU / Go" "p99 / nginx" "p99 / Go"
  printf '|-------|--------|--------:|--------:|-----------:|------------:|---------:|------------:|---------:|\n'
  for path in / /json; do
    for s in orrery nginx go; do
      printf '| %-5s | %-6s | %7s | %7s | %10s | %11s | %8s | %11s | %8s |\n' "$path" "$s" \
        "$(med "$s,$path,rps")" "$(med "$s,$path,p99")" "$(med "$s,$path,us")" \
        "$(medx "$s,$path,us/nginx")" "$(medx "$s,$path,us/go")" \
        "$(medx "$s,$path,p99/nginx")" "$(medx "$s,$path,p99/go")"
    done
  done
  echo
  echo "per run (us/req orrery nginx go):"
  for path in / /json; do
    echo "  $path: orrery ${R[orrery,$path,us]}| nginx ${R[nginx,$path,us]}| go ${R[go,$path,us]}"
  done
fi

# -- obs --
if [[ " $SECTIONS " == *" obs "* ]]; then
  declare -A OP OPID OBS
  # Ports from 18090 up that nothing listens on (other benchmarks may run
  # on the same machine).
  port=18090
  for m in $OBS_MODES; do
    while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
    OP[$m]=$port
    taskset -c "$SCPU" "$orrery" scripts/bench/http/server.lua $port 4096 "$m" "$tmp/access.$port.log" &
    pids+=($!)
    OPID[$m]=$!
    port=$((port + 1))
  done
  # The peer: nginx+Lua as in cpu, with its access log off, on (the
  # default "combined" format to a file, one write per request) and on
  # with a 64 kB buffer (one write per 64 kB or second, as orrery's
  # writer batches).
  OBS_ALL=$OBS_MODES
  if [ "${OBS_NGINX:-1}" != 0 ]; then
    for m in nginx nginx+log nginx+logbuf; do
      while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
      OP[$m]=$port
      d=$tmp/obs-$m
      mkdir -p "$d/logs"
      case $m in
        nginx) al="access_log off;" ;;
        nginx+log) al="access_log $d/logs/access.log;" ;;
        *) al="access_log $d/logs/access.log combined buffer=64k flush=1s;" ;;
      esac
      cat > "$d/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
  $al
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location = / {
      default_type "text/plain; charset=utf-8";
      content_by_lua_block { ngx.print("hello world") }
    }
  }
}
NGX
      taskset -c "$SCPU" nginx -p "$d" -c "$d/nginx.conf" &
      pids+=($!)
      OPID[$m]=$!
      port=$((port + 1))
      OBS_ALL="$OBS_ALL $m"
    done
  fi
  for m in $OBS_ALL; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:${OP[$m]}/" >/dev/null && break; sleep 0.1; done
  done
  # obs_run PID URL -> CPU us per request (as cpu_run)
  obs_run() {
    local t0 t1 r
    t0=$(ticks "$1")
    r=$(wrk_run "$2" "$CONNS" "$DURATION")
    t1=$(ticks "$1")
    echo "$r" | awk -v t0="$t0" -v t1="$t1" -v tck="$TCK" '{ printf "%.2f %s\n", (t1 - t0) * 1e6 / tck / $1, $2 }'
  }
  base=${OBS_MODES%% *}
  base_of() { case $1 in nginx*) echo nginx ;; *) echo "$base" ;; esac; }
  for _ in $(seq "$RUNS"); do
    declare -A orun=()
    for m in $OBS_ALL; do
      read -r us rps <<<"$(obs_run "${OPID[$m]}" "http://127.0.0.1:${OP[$m]}/")"
      OBS[$m,us]+="$us " OBS[$m,rps]+="$rps "
      orun[$m]=$us
    done
    for m in $OBS_ALL; do
      OBS[$m,ratio]+="$(awk -v a="${orun[$m]}" -v b="${orun[$(base_of "$m")]}" 'BEGIN { printf "%.4f", a / b }') "
    done
  done
  omed() { echo ${OBS[$1]} | tr ' ' '\n' | median; }
  echo
  echo "obs: GET /, wrk -t1 -c$CONNS -d$DURATION, one orrery server per mode on CPU $SCPU, median of $RUNS interleaved runs"
  echo
  printf '| %-14s | %7s | %10s | %13s |\n' mode "req/s" "CPU us/req" "CPU / its off"
  printf '|----------------|--------:|-----------:|--------------:|\n'
  for m in $OBS_ALL; do
    printf '| %-14s | %7s | %10s | %13s |\n' "$m" "$(omed "$m,rps")" "$(omed "$m,us")" \
      "$(printf '%.3fx' "$(omed "$m,ratio")")"
  done
  echo "(orrery modes against \"$base\", nginx's against nginx)"
  echo
  echo "per run (us/req):"
  for m in $OBS_ALL; do echo "  $m: ${OBS[$m,us]}"; done
  for m in nginx+log nginx+logbuf; do
    f=$tmp/obs-$m/logs/access.log
    [ -s "$f" ] && echo "  $m: access log $(wc -l <"$f") lines, $(du -h "$f" | cut -f1)"
  done
  for m in $OBS_MODES; do
    f=$tmp/access.${OP[$m]}.log
    [ -s "$f" ] && echo "  $m: access log $(wc -l <"$f") lines, $(du -h "$f" | cut -f1)"
  done
  true
fi

# -- idle --
if [[ " $SECTIONS " == *" idle "* ]]; then
  echo
  echo "idle: $IDLE_CONNS keep-alive connections, one request each, then idle; server RSS"
  echo
  printf '| %-6s | %11s | %10s | %13s |\n' server "RSS before" "RSS after" "bytes / conn"
  printf '|--------|------------:|-----------:|--------------:|\n'
  for s in orrery nginx go; do
    pid=$(pid_of $s)
    before=$(rss_kb "$pid")
    fifo=$tmp/idle.fifo
    rm -f "$fifo" "$tmp/idle.out"
    mkfifo "$fifo"
    taskset -c "$WCPU" "$tmp/idle" "127.0.0.1:$(port_of $s)" "$IDLE_CONNS" <"$fifo" >"$tmp/idle.out" &
    cpid=$!
    exec 9>"$fifo"
    for _ in $(seq 600); do grep -q ready "$tmp/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after=$(rss_kb "$pid")
    held=$(awk '/ready/ {print $2}' "$tmp/idle.out")
    exec 9>&-
    wait "$cpid" || true
    [ "${held:-0}" -eq "$IDLE_CONNS" ] || echo "http.sh: $s: only ${held:-0} connections held" >&2
    printf '| %-6s | %8s KB | %7s KB | %13s |\n' "$s" "$before" "$after" \
      "$(( (after - before) * 1024 / ${held:-1} ))"
    sleep 2 # let the server see the closes
  done
  echo
  echo "(nginx allocates its connection structures for worker_connections at start: they are in \"before\")"
fi

# -- slow --
if [[ " $SECTIONS " == *" slow "* ]]; then
  url=http://127.0.0.1:$P_ORR/
  read -r _ base_rps base_p99 <<<"$(wrk_run "$url" 10 "${SLOW_SECS}s")"
  # slowhttptest spins on its CPU: it runs there only when wrk leaves the
  # CPU idle (SCHED_IDLE), so that it does not slow the normal client.
  chrt -i 0 taskset -c "$WCPU" slowhttptest -H -c "$SLOW_CONNS" -r 250 -i 5 -x 24 -p 3 \
    -l $((SLOW_SECS + 20)) -u "$url" -g -o "$tmp/slow" >"$tmp/slow.out" 2>&1 &
  spid=$!
  sleep 3 # every slow connection is open
  read -r _ att_rps att_p99 <<<"$(wrk_run "$url" 10 "${SLOW_SECS}s")"
  wait "$spid" || true
  # slowhttptest's CSV: seconds, closed, pending, connected, service available
  read -r peak shed <<<"$(awk -F, -v half=$((SLOW_CONNS / 2)) 'NR > 1 {
      if ($4 > peak) peak = $4
      if (shed == "" && $2 >= half) shed = $1 }
    END { print peak + 0, (shed == "" ? "never" : shed) }' "$tmp/slow.csv")"
  echo
  echo "slow: slowhttptest -H (slowloris) with $SLOW_CONNS connections to orrery, a follow-up header every 5 s"
  echo "      (on the wrk CPU, SCHED_IDLE); normal client wrk -t1 -c10 -d${SLOW_SECS}s, 3 s into the attack"
  echo
  printf '| %-22s | %7s | %7s |\n' "normal client" "req/s" "p99 ms"
  printf '|------------------------|--------:|--------:|\n'
  printf '| %-22s | %7s | %7s |\n' "no attack" "$base_rps" "$base_p99"
  printf '| %-22s | %7s | %7s |\n' "under attack" "$att_rps" "$att_p99"
  echo
  echo "slow connections: $peak open at the peak; half of them closed by the server at second $shed of the attack"
fi
