#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tls.sh -- TLS costs side by side in one run, reported as ratios.
#
# client:    keep-alive HTTPS GETs (TLS 1.3, session reuse on) from orrery's
#            client (CONNS coroutines, one pool) and Go's net/http client
#            (GOMAXPROCS=1, CONNS goroutines), and wrk -t1 -c$CONNS over
#            TLS as the floor, against one local nginx answering 12 bytes.
#            Reported: requests/s and the client's CPU time per request.
# handshake: a new connection per request (HS_N requests, HS_CONNS at a
#            time) against the same nginx: "full" on a server that resumes
#            no session (no tickets, no cache), so every connection is a
#            full handshake (ECDHE P-256/X25519, an ECDSA P-256 signature
#            checked by the client); "resumed" on a server that issues
#            tickets, with each client's session cache on (orrery's is
#            always on; Go's is tls.NewLRUClientSessionCache). Reported:
#            handshakes/s and the client's CPU per handshake.
# server:    orrery's HTTPS server against nginx+Lua (content_by_lua_block,
#            as scripts/bench/http.sh) and nginx alone (return 200),
#            terminating TLS: wrk -t1 -c$CONNS -d$DURATION over kept-alive
#            TLS connections, "hello world". Reported: requests/s and the
#            server's CPU per request (utime+stime from /proc before and
#            after). The issue's target: orrery at most 1.0x nginx+Lua.
#
# Clients run pinned to CLIENT_CPU (wrk too), servers to SERVER_CPU; the
# peers alternate within each of RUNS runs, and every ratio is the median
# of the per-run ratios (peers measured back to back in one run), so that
# a shared machine's changes of speed land on all of them.
#
# Environment: ORRERY=path (default: build with build.sh release),
# SECTIONS="client handshake server", RUNS=3, N=100000, CONNS=50,
# HS_N=4000, HS_CONNS=8, DURATION=5s, CLIENT_CPU=1, SERVER_CPU=0.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3} N=${N:-100000} CONNS=${CONNS:-50}
HS_N=${HS_N:-4000} HS_CONNS=${HS_CONNS:-8} DURATION=${DURATION:-5s}
CCPU=${CLIENT_CPU:-1} SCPU=${SERVER_CPU:-0}
SECTIONS=${SECTIONS:-client handshake server}
scripts/deps.sh wrk nginx-light libnginx-mod-http-lua golang-go openssl >&2
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

# -- certificates: a test CA and a leaf for localhost (EC P-256) --
EC="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
(
  cd "$tmp"
  openssl req -x509 $EC -keyout ca.key -out ca.crt -days 2 -subj "/CN=Bench CA"
  openssl req $EC -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out leaf.crt \
    -days 2 -extfile leaf.ext
) >/dev/null 2>&1
CA=$tmp/ca.crt

# -- servers --
# P_KA: keep-alive and resumed handshakes (tickets on); P_FULL: no
# session is resumed; P_LUA: nginx+Lua; P_ORR: orrery.
P_KA=18443 P_FULL=18444 P_LUA=18445 P_ORR=18446
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  ssl_certificate $tmp/leaf.crt;
  ssl_certificate_key $tmp/leaf.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$P_KA ssl;
    location = / { default_type text/plain; return 200 "hello world\n"; }
  }
  server {
    listen 127.0.0.1:$P_FULL ssl;
    ssl_session_tickets off;
    ssl_session_cache off;
    location = / { default_type text/plain; return 200 "hello world\n"; }
  }
  server {
    listen 127.0.0.1:$P_LUA ssl;
    location = / {
      default_type "text/plain; charset=utf-8";
      content_by_lua_block { ngx.print("hello world") }
    }
  }
}
NGX
taskset -c "$SCPU" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
pids+=($!)
pid_ngx=$!
taskset -c "$SCPU" "$orrery" scripts/bench/tls/server.lua $P_ORR "$tmp/leaf.crt" "$tmp/leaf.key" &
pids+=($!)
pid_orr=$!
for p in $P_KA $P_FULL $P_LUA $P_ORR; do
  for _ in $(seq 100); do curl -fs --cacert "$CA" "https://localhost:$p/" >/dev/null && break; sleep 0.1; done
done
# The "full" server must resume nothing, the other one must resume: a
# TLS 1.3 session saved (after its ticket came), then offered.
reused() {
  sleep 0.3 | openssl s_client -connect 127.0.0.1:"$1" -CAfile "$CA" -sess_out "$tmp/sess" >/dev/null 2>&1
  sleep 0.3 | openssl s_client -connect 127.0.0.1:"$1" -CAfile "$CA" -sess_in "$tmp/sess" 2>/dev/null |
    grep -c '^Reused' || true
}
[ "$(reused $P_FULL)" -eq 0 ] || echo "tls.sh: warning: port $P_FULL resumes sessions" >&2
[ "$(reused $P_KA)" -gt 0 ] || echo "tls.sh: warning: port $P_KA resumes no session" >&2
go build -o "$tmp/goclient" scripts/bench/tls/client.go

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print 0 }'; }
declare -A R
med() { echo ${R[$1]} | tr ' ' '\n' | median; }

# client_run PEER N CONNS URL MODE -> "req/s cpu_us_per_req" of one run.
# The CPU time is the subshell's children's (user + system), read once
# the client exited.
client_run() {
  local out=$tmp/out ticks
  ticks=$(
    case $1 in
      orrery) taskset -c "$CCPU" "$orrery" scripts/bench/tls/client.lua "$2" "$3" "$4" "$CA" "$5" >"$out" ;;
      go) GOMAXPROCS=1 taskset -c "$CCPU" "$tmp/goclient" "$2" "$3" "$4" "$CA" "$5" >"$out" ;;
      wrk) taskset -c "$CCPU" wrk -t1 -c"$3" -d"$DURATION" "$4" >"$out" ;;
    esac
    awk '{ print $16 + $17 }' /proc/$BASHPID/stat
  )
  case $1 in
    wrk) awk -v t="$ticks" -v k="$TCK" '/ requests in /{ n = $1; s = $4; sub(/s,/, "", s) }
      END { printf "%.0f %.3f\n", n / s, t / k * 1e6 / n }' "$out" ;;
    *) awk -v t="$ticks" -v k="$TCK" '/^RESULT/{ printf "%.0f %.3f\n", $4 / $6, t / k * 1e6 / $4 }' "$out" ;;
  esac
}

# CPU ticks of a process and its children (nginx's worker).
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

# server_run PID URL -> "req/s cpu_us_per_req": wrk over TLS against it.
server_run() {
  local t0 t1 out=$tmp/wrk.out
  t0=$(ticks "$1")
  taskset -c "$CCPU" wrk -t1 -c"$CONNS" -d"$DURATION" "$2" >"$out"
  t1=$(ticks "$1")
  awk -v t0="$t0" -v t1="$t1" -v k="$TCK" '/ requests in /{ n = $1 } /Requests\/sec/{ rps = $2 }
    END { printf "%.0f %.3f\n", rps, (t1 - t0) * 1e6 / k / n }' "$out"
}

# table TITLE UNIT REF KEY PEERS... : a Markdown table of R[KEY,peer,*],
# the CPU ratio to REF's per run.
table() {
  local title=$1 unit=$2 ref=$3 key=$4 p
  shift 4
  echo
  echo "$title"
  echo
  echo "| peer | $unit/s | CPU us per $unit | CPU / $ref |"
  echo "|---|---:|---:|---:|"
  for p in "$@"; do
    printf '| %s | %s | %.2f | %.2fx |\n' "$p" "$(med "$key,$p,rps")" "$(med "$key,$p,us")" \
      "$(med "$key,$p,ratio")"
  done
  echo
  for p in "$@"; do echo "  per run $p (us): ${R[$key,$p,us]}"; done
}

# measure KEY REF FN PEERS...: RUNS interleaved runs of "FN peer", each
# printing "rps us"; the ratios are to REF in the same run.
measure() {
  local key=$1 ref=$2 fn=$3 p r
  shift 3
  declare -A us
  for _ in $(seq "$RUNS"); do
    for p in "$@"; do
      r=$($fn "$p")
      read -r rps u <<<"$r"
      R[$key,$p,rps]+="$rps " R[$key,$p,us]+="$u "
      us[$p]=$u
    done
    for p in "$@"; do R[$key,$p,ratio]+="$(ratio "${us[$p]}" "${us[$ref]}") "; done
  done
}

if [[ " $SECTIONS " == *" client "* ]]; then
  ka() { client_run "$1" "$N" "$CONNS" "https://localhost:$P_KA/" keepalive; }
  measure ka go ka orrery go wrk
  table "client: $N keep-alive HTTPS GETs, $CONNS at a time, nginx answering 12 bytes (TLS 1.3); client on CPU $CCPU, nginx on CPU $SCPU; median of $RUNS" \
    req go ka orrery go wrk
fi

if [[ " $SECTIONS " == *" handshake "* ]]; then
  full() { client_run "$1" "$HS_N" "$HS_CONNS" "https://localhost:$P_FULL/" new; }
  resumed() { client_run "$1" "$HS_N" "$HS_CONNS" "https://localhost:$P_KA/" resume; }
  measure full go full orrery go
  measure resumed go resumed orrery go
  table "handshake (full): $HS_N requests, a new TLS 1.3 connection and a full handshake each, $HS_CONNS at a time; median of $RUNS" \
    handshake go full orrery go
  table "handshake (resumed): the same, resuming the session from the previous ticket" \
    handshake go resumed orrery go
fi

if [[ " $SECTIONS " == *" server "* ]]; then
  pid_of() { case $1 in orrery) echo $pid_orr ;; *) echo $pid_ngx ;; esac; }
  url_of() {
    case $1 in
      orrery) echo "https://127.0.0.1:$P_ORR/" ;;
      nginx+lua) echo "https://127.0.0.1:$P_LUA/" ;;
      nginx) echo "https://127.0.0.1:$P_KA/" ;;
    esac
  }
  srv() { server_run "$(pid_of "$1")" "$(url_of "$1")"; }
  measure server nginx+lua srv orrery nginx+lua nginx
  table "server: wrk -t1 -c$CONNS -d$DURATION over kept-alive TLS 1.3, \"hello world\"; server on CPU $SCPU, wrk on CPU $CCPU; median of $RUNS (target: orrery CPU / nginx+lua <= 1.0)" \
    req nginx+lua server orrery nginx+lua nginx
fi
