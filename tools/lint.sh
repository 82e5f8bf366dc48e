#!/bin/sh
# make lint: formatting (clang-format), clang-tidy (.clang-tidy) and cppcheck
# (tools/cppcheck.supp) over our own C sources; exits non-zero on any finding.
# Needs a configured build directory (for compile_commands.json): $1, default build.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/compile_commands.json" ] || {
    echo "lint: $build/compile_commands.json is missing; run 'make build' first" >&2
    exit 1
}
status=0
sources=$(git ls-files '*.c' '*.h')
code=$(git ls-files 'core/*.c' 'tools/*.c' 'examples/*.c' 'projectors/*.c')

echo "lint: clang-format"
clang-format --dry-run --Werror $sources || status=1

echo "lint: clang-tidy"
# One process a file, two at a time; each prints only its findings.
printf '%s\n' $code | xargs -P 2 -n 1 clang-tidy -p "$build" --quiet 2>/dev/null \
    > "$build/clang-tidy.txt" || status=1
if grep -q 'warning:\|error:' "$build/clang-tidy.txt"; then
    grep -A3 'warning:\|error:' "$build/clang-tidy.txt" >&2
    status=1
fi

echo "lint: cppcheck"
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
    --inline-suppr --suppressions-list=tools/cppcheck.supp -D__GNUC__ \
    -I core/include -I core/src $code || status=1

[ $status -eq 0 ] && echo "lint: clean"
exit $status
