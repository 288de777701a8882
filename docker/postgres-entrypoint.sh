#!/bin/sh
# First start: initdb into the volume with the superuser `screener` and the password from
# the file SCREENER_SHARED_PASSWORD_FILE names (docker/compose.shared.yml mounts it under
# /run/secrets; initdb reads it with --pwfile, never a flag), and a database `screener`.
# Every start: postgres on 127.0.0.1:${SCREENER_PG_PORT:-25432}.
set -eu
data=/var/lib/screener-pg/data
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=${SCREENER_PG_PORT:-25432}
if [ ! -s "$data/PG_VERSION" ]; then
    pwfile=${SCREENER_SHARED_PASSWORD_FILE:-}
    if [ -z "$pwfile" ] || [ ! -s "$pwfile" ]; then
        echo "screener-postgres: set SCREENER_SHARED_PASSWORD (see .env.example)" >&2
        exit 1
    fi
    "$bin/initdb" -D "$data" -U screener --auth=scram-sha-256 --pwfile="$pwfile" \
        --no-locale -E UTF8 >/dev/null
    "$bin/postgres" --single -D "$data" postgres <<SQL >/dev/null
CREATE DATABASE screener;
SQL
fi
exec "$bin/postgres" -D "$data" -p "$port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories=/tmp
