#!/usr/bin/env bash
# Start the Node-RED bench peer in the foreground (exec: the caller's PID is node's own).
#
#   benches/peers/node-red/run.sh USERDIR PORT MQTT_HOST MQTT_PORT VM_URL
#
#   USERDIR    Node-RED user dir; created; flows.json + settings.js are (re)written there
#   PORT       HTTP port, bound to 127.0.0.1; serves only GET /ready (the editor and admin API are off)
#   MQTT_HOST  MQTT_PORT   broker to subscribe to (QoS 1, clean session false, fixed client id)
#   VM_URL     VictoriaMetrics base URL, e.g. http://127.0.0.1:8428
#
# Ready: `curl -sf http://127.0.0.1:PORT/ready` answers 200 "ready" once the MQTT client is
# connected and has sent its SUBSCRIBE (503 before); the log also prints
# "[mqtt-broker:bench broker] Connected to broker: ...".
#
# Optional environment:
#   NODE_RED_HOME    install made by setup.sh (default <repo>/target/bench-peers/node-red)
#   NR_TOPIC         subscription (default bench/#)
#   NR_CLIENT_ID     MQTT client id (default enviromon-bench-node-red)
#   NR_BATCH_POINTS  flush the accumulated points at this many (default 5000)
#   NR_BATCH_MS      ... or this many ms after the first unflushed point (default 100)
#   NR_INFLUX_API    v1 (default): POST VM_URL/write?db=NR_DB&precision=ms
#                    v2: POST VM_URL/api/v2/write?org=&bucket=NR_DB&precision=ms (gzips bodies > 1 KB)
#   NR_DB            database / bucket (default bench). VM 1.79 turns v1 ?db=bench into a label
#                    db="bench" on every series; v2 ?bucket= adds no label
#   NR_LOG_LEVEL     Node-RED console log level (default info: startup + connect lines, then quiet)
#   NR_NODE_OPTIONS  extra flags for node (default none)
set -euo pipefail

if [[ $# -ne 5 ]]; then
    echo "usage: $0 USERDIR PORT MQTT_HOST MQTT_PORT VM_URL" >&2
    exit 2
fi
userdir="$1" port="$2" mqtt_host="$3" mqtt_port="$4" vm_url="${5%/}"
[[ "$port" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: PORT must be a number" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
home="${NODE_RED_HOME:-$repo/target/bench-peers/node-red}"
red="$home/node_modules/node-red/red.js"
if [[ ! -f "$red" || ! -d "$home/node_modules/node-red-contrib-influxdb" ]]; then
    echo "run.sh: no Node-RED install in $home; run benches/peers/node-red/setup.sh first" >&2
    exit 1
fi

case "${NR_INFLUX_API:-v1}" in
    v1) influx_version="1.x" ;;
    v2) influx_version="2.0" ;;
    *) echo "run.sh: NR_INFLUX_API must be v1 or v2" >&2; exit 2 ;;
esac

mkdir -p "$userdir"
userdir="$(cd "$userdir" && pwd)"

# Node-RED loads contributed nodes from USERDIR/node_modules.
if [[ -L "$userdir/node_modules" || ! -e "$userdir/node_modules" ]]; then
    ln -sfn "$home/node_modules" "$userdir/node_modules"
fi

# Render flows.json: every "@@NAME@@" inside a string value of the template is replaced.
NR_T_MQTT_HOST="$mqtt_host" NR_T_MQTT_PORT="$mqtt_port" NR_T_VM_URL="$vm_url" \
NR_T_TOPIC="${NR_TOPIC:-bench/#}" NR_T_CLIENT_ID="${NR_CLIENT_ID:-enviromon-bench-node-red}" \
NR_T_BATCH_POINTS="${NR_BATCH_POINTS:-5000}" NR_T_BATCH_MS="${NR_BATCH_MS:-100}" \
NR_T_INFLUXDB_VERSION="$influx_version" NR_T_VM_DB="${NR_DB:-bench}" \
node - "$here/flows.template.json" "$userdir/flows.json" <<'JS'
const fs = require('fs');
const [src, dst] = process.argv.slice(2);
const e = process.env;
const u = new URL(e.NR_T_VM_URL);
if (u.protocol !== 'http:') { throw new Error('VM_URL must be http://host:port'); }
for (const k of ['NR_T_BATCH_POINTS', 'NR_T_BATCH_MS', 'NR_T_MQTT_PORT']) {
    if (!/^[1-9][0-9]*$/.test(e[k])) { throw new Error(`${k.slice(5)} must be a positive integer, got ${e[k]}`); }
}
const vars = {
    MQTT_HOST: e.NR_T_MQTT_HOST, MQTT_PORT: e.NR_T_MQTT_PORT, TOPIC: e.NR_T_TOPIC,
    CLIENT_ID: e.NR_T_CLIENT_ID, BATCH_POINTS: e.NR_T_BATCH_POINTS, BATCH_MS: e.NR_T_BATCH_MS,
    INFLUXDB_VERSION: e.NR_T_INFLUXDB_VERSION, VM_URL: u.origin, VM_HOST: u.hostname.replace(/^\[|\]$/g, ''),
    VM_PORT: u.port || '80', VM_DB: e.NR_T_VM_DB, VM_ORG: '',
};
const sub = (s) => s.replace(/@@([A-Z_]+)@@/g, (m, k) => {
    if (!(k in vars)) { throw new Error(`unknown placeholder ${m}`); }
    return vars[k];
});
const walk = (v) => typeof v === 'string' ? sub(v)
    : Array.isArray(v) ? v.map(walk)
    : (v && typeof v === 'object') ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]))
    : v;
fs.writeFileSync(dst, JSON.stringify(walk(JSON.parse(fs.readFileSync(src, 'utf8'))), null, 1) + '\n');
JS

cat > "$userdir/settings.js" <<JS
// Written by benches/peers/node-red/run.sh; rewritten on every start.
module.exports = {
    flowFile: "flows.json",
    flowFilePretty: true,
    credentialSecret: false,
    uiHost: "127.0.0.1",
    uiPort: $((port)),
    httpAdminRoot: false,          // no editor, no admin API
    httpNodeRoot: "/",             // serves the flow's GET /ready only
    httpStatic: false,
    disableEditor: true,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    editorTheme: { projects: { enabled: false }, tours: false },
    functionExternalModules: false,
    functionTimeout: 0,
    logging: {
        console: { level: "${NR_LOG_LEVEL:-info}", metrics: false, audit: false },
    },
    exportGlobalContextKeys: false,
};
JS

# shellcheck disable=SC2086
exec node ${NR_NODE_OPTIONS:-} "$red" --userDir "$userdir" --port "$port" --settings "$userdir/settings.js" flows.json
