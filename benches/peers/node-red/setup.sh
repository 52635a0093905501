#!/usr/bin/env bash
# Install the Node-RED bench peer (node-red + node-red-contrib-influxdb, versions pinned by
# package-lock.json beside this script) into DIR, default <repo>/target/bench-peers/node-red.
#
#   benches/peers/node-red/setup.sh [DIR]
#
# Idempotent: skipped when DIR already holds an install made from the same package-lock.json
# (DIR/.installed-lock.sha256 records the lock's hash once `npm ci` has succeeded).
# Needs node >= 18.5 and npm on PATH (Node-RED 4.1.x; 5.x would need node >= 22.9).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
dir="${1:-$repo/target/bench-peers/node-red}"

command -v node >/dev/null || { echo "setup.sh: node not found on PATH" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm not found on PATH" >&2; exit 1; }

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
stamp="$dir/.installed-lock.sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$dir/node_modules/node-red/red.js" \
      && -d "$dir/node_modules/node-red-contrib-influxdb" ]]; then
    echo "node-red peer already installed in $dir"
    exit 0
fi

rm -f "$stamp"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
(cd "$dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
echo "$want" > "$stamp"
echo "node-red peer installed in $dir ($(node -p "require('$dir/node_modules/node-red/package.json').version"))"
