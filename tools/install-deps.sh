#!/bin/sh
# Installs the Debian packages eskit needs to build, test and run its demo (prometheus for
# promtool, which checks tools/monitoring).
# Does nothing (and needs no network) when every package is already installed. Also installs the
# npm package the framing interop test checks eskit against (tests/interop, pinned by its
# package-lock.json) into tests/interop/node_modules, when it is not there yet.
set -eu

PKGS="build-essential cmake pkg-config librdkafka-dev libprotobuf-c-dev protobuf-c-compiler
libprotobuf-dev protobuf-compiler libsqlite3-dev sqlite3 libcriterion-dev kcat valgrind
clang-format clang-tidy cppcheck libcurl4-openssl-dev nodejs libmicrohttpd-dev prometheus"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

# A Node.js build that carries its own npm (not Debian's) needs no npm package.
command -v npm >/dev/null 2>&1 || missing="$missing npm"

interop_deps() {
    dir=$(dirname "$0")/../tests/interop
    [ -d "$dir/node_modules/@kafkajs/confluent-schema-registry" ] && return 0
    echo "install-deps: installing the interop test's npm packages into $dir/node_modules"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
}

if [ -z "$missing" ]; then
    interop_deps
    exit 0
fi

echo "install-deps: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install packages; run as root or install them with apt-get" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
interop_deps
