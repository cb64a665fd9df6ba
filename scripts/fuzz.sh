#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fuzz.sh [target...] -- builds the libFuzzer targets (host/fuzz_*.c) with
# clang into build-fuzz/ and runs each for FUZZ_SECONDS (default 30) from
# a small seed corpus written to a temporary directory. Crashing inputs
# are kept in build-fuzz/artifacts/<target>/. Extra libFuzzer flags can be
# passed in FUZZ_FLAGS, e.g. FUZZ_FLAGS=-jobs=4.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh clang libclang-rt-14-dev
seconds=${FUZZ_SECONDS:-30}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in host/fuzz_*.c; do
    [ -e "$f" ] && targets+=("$(basename "$f" .c)")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets in host/" >&2
  exit 1
fi

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DORRERY_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Seeds and a dictionary per target; a target without them starts empty.
seed_fuzz_json() {
  local dir=$1 i=0
  # $'...' seeds hold raw bytes; the others are JSON text as written.
  local seeds=(
    '{"a":[1,2.5,-0,1e10,true,false,null],"b":{"c":"d"}}'
    '[]' '{}' '"\u0000\ud83d\ude00\n\t\\\/"' '0' '-1.5e-300' '9007199254740993'
    '[[[[[[[[[[1]]]]]]]]]]' '{"a":1,"a":2}' $'"caf\u00e9 \xe2\x82\xac \xf0\x9f\x98\x80"'
    '[1e999]' '01' '1.' '"\ud800"' $'"\xc0\xaf"' $'"\xed\xa0\x80"' '[1,]'
    ' {"k" : [ "v" ] } ' '123456789012345678901234567890' '0.000000000000000000000000000001'
  )
  for s in "${seeds[@]}"; do
    printf '%s' "$s" >"$dir/seed$i"
    i=$((i + 1))
  done
  cat >"$work/fuzz_json.dict" <<'EOF'
"{"
"}"
"["
"]"
","
":"
"\""
"\\"
"\\u"
"\\ud800"
"\\udc00"
"true"
"false"
"null"
"-"
"."
"e+"
"E-"
"0"
"1e308"
"\xc2\x80"
"\xe2\x82\xac"
"\xf0\x9f\x98\x80"
"\xed\xa0\x80"
EOF
}

# Request heads of the shape the parser's fast path takes, and near
# misses; the first byte of each input sets how it is split into reads.
seed_fuzz_http_fast() {
  local dir=$1 i=0
  local seeds=(
    $'\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n'
    $'\x01GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\nGET /next HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n'
    $'\x01HEAD /x HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n'
    $'\x01HEAD /x HTTP/1.0\r\nConnection: Keep-Alive\t\r\n\r\n'
    $'\x01GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive \r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n'
    $'\x01POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'
    $'\x01GET /%20?q#f HTTP/1.1\r\nHost: a\r\nX-A:  v \t\r\nX-B:\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost: a\r\n X: fold\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost : a\r\n\r\n'
    $'\x01GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n'
    $'\x05GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n'
    $'\x01GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\nContent-Length: 0\r\n\r\n'
    $'\x01GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\nY: a\x7fb\r\n\r\n'
  )
  for s in "${seeds[@]}"; do
    printf '%s' "$s" >"$dir/seed$i"
    i=$((i + 1))
  done
}

status=0
# Responses of every framing the client parses, and near misses; the
# first byte of each input sets how it is split into reads, the second
# whether it answers a HEAD request.
seed_fuzz_http_client() {
  local dir=$1 i=0
  local seeds=(
    $'\x05\x02HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'
    $'\x03\x02HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n'
    $'\x07\x02HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 204 No\r\n\r\n'
    $'\x01\x01HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'
    $'\x09\x02HTTP/1.0 200 OK\r\n\r\nuntil the close'
    $'\x02\x02HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n'
    $'\x04\x02HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'
    $'\x06\x02HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n'
  )
  for s in "${seeds[@]}"; do
    printf '%s' "$s" >"$dir/seed$i"
    i=$((i + 1))
  done
}

for t in "${targets[@]}"; do
  corpus="$work/$t"
  mkdir -p "$corpus" "build-fuzz/artifacts/$t"
  flags=()
  if declare -F "seed_$t" >/dev/null; then
    "seed_$t" "$corpus"
    [ -f "$work/$t.dict" ] && flags+=("-dict=$work/$t.dict")
  fi
  echo "== $t (${seconds}s)" >&2
  # shellcheck disable=SC2086
  if ! "build-fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t/" \
    "${flags[@]}" ${FUZZ_FLAGS:-} "$corpus"; then
    echo "fuzz.sh: $t failed; see build-fuzz/artifacts/$t/" >&2
    status=1
  fi
done
exit $status
