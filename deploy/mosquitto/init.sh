#!/bin/sh
# The compose `init` service (one-shot, runs at every `docker compose up`), in two parts:
#
# 1. Preflight / 启动前检查: refuse to start the stack while deploy/.env still holds placeholder
#    secrets, or values the services would reject later with a less clear message.
# 2. Mosquitto credentials / 代理账号: write the broker's password file (hashed) and ACL into the
#    mosquitto-auth volume, from deploy/.env and deploy/mosquitto/{acl,passwd.extra}.
#
# Runs in the eclipse-mosquitto image (it has mosquitto_passwd). Paths can be overridden for a
# test outside Docker: INIT_SRC (default /init), AUTH_DIR (default /mosquitto/auth),
# AUTH_OWNER (default mosquitto:mosquitto).
set -eu

src=${INIT_SRC:-/init}
auth=${AUTH_DIR:-/mosquitto/auth}
owner=${AUTH_OWNER:-mosquitto:mosquitto}

fail=0
complain() {
    echo "deploy/.env: $1" >&2
    fail=1
}

# A secret must be set, not a placeholder, and not all digits: enviromon reads ENVIROMON__* values
# with type inference, so a digits-only token or password would be read as a number (leading zeros lost).
check_secret() {
    name=$1
    eval "value=\${$name:-}"
    case "$value" in
        "") complain "$name is empty" ;;
        change-me*) complain "$name is still the placeholder \"$value\" — set a real secret (修改默认密码)" ;;
        *[!0-9]*) ;;
        *) complain "$name is all digits; add a letter (ENVIROMON__* values are type-inferred: a number loses leading zeros)" ;;
    esac
}

check_secret MQTT_ENVIROMON_PASSWORD
check_secret MQTT_FIELD_PASSWORD
check_secret INFLUXDB_ADMIN_PASSWORD
check_secret INFLUXDB_ADMIN_TOKEN
check_secret GRAFANA_ADMIN_PASSWORD
# InfluxDB's setup refuses passwords shorter than 8 characters.
influx_password=${INFLUXDB_ADMIN_PASSWORD:-}
if [ -n "$influx_password" ] && [ "${#influx_password}" -lt 8 ]; then
    complain "INFLUXDB_ADMIN_PASSWORD must have at least 8 characters (InfluxDB refuses shorter)"
fi
if [ "$fail" -ne 0 ]; then
    echo "init: fix deploy/.env, then run docker compose up -d again / 请修改 deploy/.env 后重新启动" >&2
    exit 1
fi

umask 077
mkdir -p "$auth"
tmp="$auth/passwd.tmp"
rm -f "$tmp"
# mosquitto_passwd hashes (PBKDF2-SHA512); -b takes the password from the command line, which is
# acceptable inside this short-lived container.
mosquitto_passwd -c -b "$tmp" enviromon "$MQTT_ENVIROMON_PASSWORD"
mosquitto_passwd -b "$tmp" field "$MQTT_FIELD_PASSWORD"
healthcheck_password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
mosquitto_passwd -b "$tmp" healthcheck "$healthcheck_password"

# Per-device accounts: deploy/mosquitto/passwd.extra holds lines already hashed by mosquitto_passwd
# (never plain passwords). The three accounts above cannot be redefined there.
if [ -f "$src/passwd.extra" ]; then
    grep -v -E '^[[:space:]]*(#|$)' "$src/passwd.extra" \
        | grep -v -E '^(enviromon|field|healthcheck):' >>"$tmp" || true
fi

printf '%s\n' "$healthcheck_password" >"$auth/healthcheck.pw.tmp"
cp "$src/acl" "$auth/acl.tmp"
for f in passwd acl healthcheck.pw; do
    chown "$owner" "$auth/$f.tmp"
    chmod 0600 "$auth/$f.tmp"
    mv -f "$auth/$f.tmp" "$auth/$f"
done
users=$(cut -d: -f1 "$auth/passwd" | tr '\n' ' ')
echo "init: secrets checked; broker accounts: $users"
