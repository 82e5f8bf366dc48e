#!/bin/sh
# Checks the alert rules (promtool check rules, then their unit tests) and the dashboard (it parses,
# and reads only the metric families docs/observability.md names). Run from anywhere; ctest runs it
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
node "$dir/check-names.js" "$root/docs/observability.md" "$dir/eskit-dashboard.json" \
    "$dir/eskit-alerts.yml"
