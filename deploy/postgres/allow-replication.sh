#!/bin/sh
# Run once by the postgres image's entrypoint on a new data folder (/docker-entrypoint-initdb.d):
# lets a standby connect for streaming replication with the password (scram-sha-256).
set -eu
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
