#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deps.sh -- installs the Debian 12 packages orrery needs, if missing.
# Idempotent; runs apt-get as root or through sudo. Extra package names
# given as arguments are installed too (benchmarks and tests use this).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libluajit2-5.1-dev libuv1-dev
  libcjson-dev libssl-dev openssl node-llhttp libedit-dev libsqlite3-dev libpq-dev
  "$@")
missing=()
for p in "${pkgs[@]}"; do
  if [ "$p" = luajit ] || [ "$p" = libluajit-5.1-dev ]; then
    # Debian's luajit binary package pulls in the original LuaJIT library,
    # which replaces libluajit2-5.1-dev (OpenResty's fork, GC64) that orrery
    # builds against. Debian's luajit2 package has the same fork's binary.
    echo "deps.sh: refusing to install $p (conflicts with libluajit2-5.1-dev); install luajit2 instead" >&2
    continue
  fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps.sh: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
