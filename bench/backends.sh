#!/usr/bin/env bash
# Gives the benchmarks their own, empty distributed backends, apart from the test suite's:
#   RabbitMQ vhost `abaco_bench` (deleted and re-created, so no queue of an earlier run is left),
#   PostgreSQL database `abaco_bench` (dropped and re-created, owner abaco),
#   Redis database 9 (flushed).
# Expects the services of scripts/services.sh to be running. Idempotent.
set -euo pipefail
log() { echo "backends: $*" >&2; }

rabbitmqctl -q delete_vhost abaco_bench >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost abaco_bench >/dev/null
rabbitmqctl -q set_permissions -p abaco_bench guest '.*' '.*' '.*' >/dev/null
log "RabbitMQ vhost abaco_bench ready"

su postgres -c "psql -qc 'DROP DATABASE IF EXISTS abaco_bench'" >/dev/null
su postgres -c "createdb -O abaco abaco_bench"
log "PostgreSQL database abaco_bench ready"

redis-cli -h 127.0.0.1 -n 9 flushdb >/dev/null
log "Redis database 9 flushed"
