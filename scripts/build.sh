#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# build.sh [debug|release|sanitize] -- configures and builds into build/,
# build-debug/ or build-asan/. Prints the path of the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-release}
case "$mode" in
  release) dir=build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  debug) dir=build-debug; args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  sanitize) dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DORRERY_SANITIZE=ON) ;;
  *) echo "usage: build.sh [release|debug|sanitize]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" "${args[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)" >&2
echo "$PWD/$dir/orrery"
