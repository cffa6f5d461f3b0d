#!/bin/bash
# Runs once, when the influxdb:2.x image initialises an empty data volume (after `influx setup`), with
# the admin token active in the influx CLI. Creates one token per purpose and leaves each where only
# its user can read it, on the influxdb-tokens volume:
#   exporter.token  write to and read the bucket (axis-exporter, uid 10001, via INFLUXDB_V2_TOKEN_FILE;
#                   it reads today's counts for its status page)
#   grafana.token   read-only from the bucket  (Grafana, uid 472, via $__file{} in its data source)
# InfluxDB 2.x generates token values itself; they cannot be fixed in .env, hence the shared files.
set -euo pipefail

token_dir=${AXIS_TOKEN_DIR:-/var/lib/axis-tokens}
org=${DOCKER_INFLUXDB_INIT_ORG:?}
bucket_id=${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}
bucket=${DOCKER_INFLUXDB_INIT_BUCKET:?}

# create_token FILE OWNER_UID DESCRIPTION PERMISSION_FLAG... (each flag takes the bucket id)
create_token() {
    local file=$1 owner=$2 description=$3 json token flag
    local permissions=()
    shift 3
    for flag in "$@"; do
        permissions+=("$flag" "$bucket_id")
    done
    json=$(influx auth create --org "$org" "${permissions[@]}" --description "$description" --json)
    token=$(printf '%s\n' "$json" | grep -o '"token": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')
    if [ -z "$token" ]; then
        echo "create-tokens: influx auth create returned no token for $file" >&2
        exit 1
    fi
    install -d -m 0755 "$token_dir"
    (umask 077 && printf '%s' "$token" > "$token_dir/$file.tmp")
    chown "$owner" "$token_dir/$file.tmp"
    chmod 0400 "$token_dir/$file.tmp"
    mv "$token_dir/$file.tmp" "$token_dir/$file"
    echo "create-tokens: wrote $token_dir/$file ($description)"
}

create_token exporter.token 10001 "axis-exporter: write to and read bucket $bucket" --write-bucket --read-bucket
create_token grafana.token 472 "grafana: read bucket $bucket" --read-bucket
