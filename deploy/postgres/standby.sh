#!/bin/sh
# The read replica's entrypoint: on an empty data folder, copy the primary with pg_basebackup
# (-R writes standby.signal and primary_conninfo: a hot standby streaming from the primary),
# then run PostgreSQL as the postgres user. Same image as the primary, so pgvector matches.
set -eu
: "${PRIMARY_HOST:=postgres}"
: "${POSTGRES_USER:=ragkeep}"
export PGPASSWORD="$(cat "${POSTGRES_PASSWORD_FILE:-/run/secrets/ragkeep_db_password}")"
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until gosu postgres pg_isready -h "$PRIMARY_HOST" -U "$POSTGRES_USER"; do sleep 1; done
    gosu postgres pg_basebackup -h "$PRIMARY_HOST" -U "$POSTGRES_USER" -D "$PGDATA" -R -X stream -P
fi
exec gosu postgres postgres -c hot_standby=on
