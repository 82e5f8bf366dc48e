#!/bin/sh
# Installs the Debian packages eskit needs to build, test and run its demo.
# Does nothing (and needs no network) when every package is already installed.
set -eu

PKGS="build-essential cmake pkg-config librdkafka-dev libprotobuf-c-dev protobuf-c-compiler
libprotobuf-dev protobuf-compiler libsqlite3-dev sqlite3 libcriterion-dev kcat valgrind
clang-format clang-tidy cppcheck"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install packages; run as root or install them with apt-get" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
