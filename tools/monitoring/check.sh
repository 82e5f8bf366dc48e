#!/bin/sh
# Checks the alert rules (promtool check rules, then their unit tests) and the dashboard (it parses,
# reads only the metric families docs/observability.md names, and its queries are PromQL). Run from anywhere; ctest runs it
# as integration.monitoring. A missing promtool or node fails the check rather than skipping it.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$dir/../.." && pwd)
for tool in promtool node; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: $tool not found; install it with tools/install-deps.sh (Debian packages prometheus, nodejs)" >&2
        exit 1
    fi
done
promtool check rules "$dir/eskit-alerts.yml"
# promtool resolves rule_files against the test file's directory.
promtool test rules "$dir/eskit-alerts.test.yml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node "$dir/check-names.js" --promql-out "$tmp/dashboard-queries.yml" "$root/docs/observability.md" \
    "$dir/eskit-dashboard.json" "$dir/eskit-alerts.yml"
# Every panel's query parses as PromQL (with its variables replaced by sample values).
promtool check rules "$tmp/dashboard-queries.yml"
