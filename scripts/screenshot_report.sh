#!/usr/bin/env bash
# Screenshot a parity report's report.html with headless Chromium, to check the layout by eye.
#
# Usage: scripts/screenshot_report.sh REPORT_DIR [OUT_PNG] [WIDTHxHEIGHT]
#   REPORT_DIR  directory holding report.html (e.g. <engine dir>/report)
#   OUT_PNG     default: REPORT_DIR/report.png
#   WIDTHxHEIGHT default: 1280x2400 (the page is clipped to this window)
# Env: CHROMIUM (default: chromium, chromium-browser or google-chrome from PATH).
#
# All networking features are switched off: the report must be self-contained anyway, and a
# screenshot must never phone home. A throwaway profile dir is removed afterwards.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

report_dir=$1
html="$report_dir/report.html"
out=${2:-"$report_dir/report.png"}
size=${3:-1280x2400}

if [[ ! -f "$html" ]]; then
    echo "error: $html not found; write a report first (e.g. scripts/sample_report.py $report_dir)" >&2
    exit 2
fi

browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "error: no Chromium found; install chromium or set CHROMIUM=/path/to/chrome" >&2
    exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs_html=$(cd "$(dirname "$html")" && pwd)/report.html
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$abs_out" --window-size="${size/x/,}" "file://$abs_html" \
    >/dev/null 2>"$profile/chromium.log" || {
        echo "error: chromium failed; its log:" >&2
        cat "$profile/chromium.log" >&2
        exit 1
    }
if [[ ! -s "$abs_out" ]]; then
    echo "error: chromium wrote no screenshot; its log:" >&2
    cat "$profile/chromium.log" >&2
    exit 1
fi
echo "$abs_out"
