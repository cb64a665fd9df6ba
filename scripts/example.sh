#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# example.sh [example] -- installs what is missing, builds, runs an example
# from examples/ (default: http_hello.lua, an HTTP service).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
bin=$(scripts/build.sh release)
exec "$bin" "examples/${1:-http_hello.lua}"
