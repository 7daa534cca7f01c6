#!/usr/bin/env bash
# Private Redis, PostgreSQL, RabbitMQ and Docker engine for the fault suite (cli/tests/faults.rs),
# on their own ports and directories, so restarting them disturbs nobody else's tests (the shared
# services of scripts/services.sh are never touched).
#   scripts/fault-services.sh start               start every service that is not up; print the env
#   scripts/fault-services.sh fresh               stop them, delete their data, start them (the
#                                                 suite starts from empty stores and queues)
#   scripts/fault-services.sh stop                stop them all
#   scripts/fault-services.sh restart SERVICE     SERVICE: redis | postgres | rabbitmq | docker
# Restarts are crash-like where the service allows it: Redis gets SIGKILL (its append-only file is
# fsynced on every write, so every acknowledged write survives), PostgreSQL an immediate stop
# (crash recovery from the WAL on start), RabbitMQ `rabbitmqctl stop` (durable queues and
# persistent messages survive), the Docker engine SIGTERM (scripts/dockerd2.sh restart).
# Environment: ABACO_FAULTS_DIR (default /tmp/abaco-faults) and ABACO_FAULTS_{REDIS,POSTGRES,AMQP}_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${ABACO_FAULTS_DIR:-/tmp/abaco-faults}
redis_port=${ABACO_FAULTS_REDIS_PORT:-6390}
pg_port=${ABACO_FAULTS_POSTGRES_PORT:-5440}
amqp_port=${ABACO_FAULTS_AMQP_PORT:-5680}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
rabbit_node=abacofaults@$(hostname -s)
docker_name=abaco-docker3

log() { echo "fault-services: $*" >&2; }

wait_for() { # name, deadline seconds, command...
  local name=$1 deadline=$2
  shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start > deadline)); then
      log "$name did not come up within ${deadline}s"
      return 1
    fi
    sleep 0.2
  done
}

# --- Redis -----------------------------------------------------------------------------------
redis_up() { redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

redis_start() {
  redis_up && return 0
  mkdir -p "$dir/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" --save '' \
    --appendonly yes --appendfsync always >/dev/null
  wait_for redis 30 redis_up
}

redis_stop() {
  redis_up || return 0
  redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
  wait_for "redis to stop" 30 bash -c "! redis-cli -p $redis_port ping"
}

redis_crash() {
  local pid
  pid=$(cat "$dir/redis/redis.pid")
  kill -KILL "$pid"
  wait_for "redis to die" 10 bash -c "! kill -0 $pid"
  rm -f "$dir/redis/redis.pid"
}

# --- PostgreSQL --------------------------------------------------------------------------------
pg() { su postgres -s /bin/sh -c "$*"; }
pg_up() { "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q; }

pg_start() {
  pg_up && return 0
  if [ ! -f "$dir/pg/data/PG_VERSION" ]; then
    mkdir -p "$dir/pg"
    chown postgres: "$dir/pg"
    pg "$pg_bin/initdb -D $dir/pg/data --auth=trust -U postgres" >/dev/null
  fi
  pg "$pg_bin/pg_ctl -D $dir/pg/data -l $dir/pg/postgres.log -w -t 60 \
    -o '-p $pg_port -c listen_addresses=127.0.0.1 -k $dir/pg' start" >/dev/null
  wait_for postgres 30 pg_up
  local psql="$pg_bin/psql -h 127.0.0.1 -p $pg_port -U postgres -tAc"
  $psql "SELECT 1 FROM pg_roles WHERE rolname='abaco'" | grep -q 1 ||
    $psql "CREATE ROLE abaco LOGIN SUPERUSER PASSWORD 'abaco'" >/dev/null
  $psql "SELECT 1 FROM pg_database WHERE datname='abaco'" | grep -q 1 ||
    $psql "CREATE DATABASE abaco OWNER abaco" >/dev/null
}

pg_stop() { # mode: fast | immediate
  [ -f "$dir/pg/data/postmaster.pid" ] || return 0
  pg "$pg_bin/pg_ctl -D $dir/pg/data -m $1 -w stop" >/dev/null
}

# --- RabbitMQ ----------------------------------------------------------------------------------
rabbit_env() {
  export RABBITMQ_NODENAME=$rabbit_node RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$amqp_port RABBITMQ_DIST_PORT=$((amqp_port + 20000))
  export RABBITMQ_MNESIA_BASE=$dir/rabbit/mnesia RABBITMQ_LOG_BASE=$dir/rabbit/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/rabbit/enabled_plugins
  export RABBITMQ_PID_FILE=$dir/rabbit/rabbit.pid
}
rabbit_up() { timeout -k 5 20 rabbitmqctl -q -n "$rabbit_node" status >/dev/null 2>&1; }

rabbit_start() {
  rabbit_up && return 0
  mkdir -p "$dir/rabbit/mnesia" "$dir/rabbit/log"
  echo '[].' >"$dir/rabbit/enabled_plugins"
  chown -R rabbitmq: "$dir/rabbit"
  # The whole subshell is detached from our stdout, or callers reading it would wait forever.
  (rabbit_env && exec setsid rabbitmq-server) </dev/null >>"$dir/rabbit/server.log" 2>&1 &
  wait_for "rabbitmq node" 120 rabbit_up
  timeout -k 5 120 rabbitmqctl -q -n "$rabbit_node" await_startup >/dev/null
}

rabbit_stop() {
  rabbit_up || return 0
  timeout -k 5 60 rabbitmqctl -q -n "$rabbit_node" stop >/dev/null
  wait_for "rabbitmq to stop" 60 bash -c "! timeout -k 5 20 rabbitmqctl -q -n $rabbit_node status"
}

# --- Docker --------------------------------------------------------------------------------------
docker_ctl() { ABACO_DOCKERD_NAME=$docker_name bash scripts/dockerd2.sh "$1" >/dev/null; }

start_all() {
  mkdir -p "$dir"
  chmod 755 "$dir"
  redis_start
  pg_start
  rabbit_start
  docker_ctl start
  log "up under $dir"
}

stop_all() {
  redis_stop
  pg_stop fast
  rabbit_stop
}

case "${1:-start}" in
  start) start_all ;;
  fresh)
    stop_all
    rm -rf "$dir/redis" "$dir/pg" "$dir/rabbit"
    start_all
    # The private engine is nobody else's: its containers are leftovers of an earlier run.
    ids=$(docker -H "unix:///var/run/$docker_name.sock" ps -aq)
    [ -z "$ids" ] || docker -H "unix:///var/run/$docker_name.sock" rm -f $ids >/dev/null
    ;;
  stop) stop_all && docker_ctl stop ;;
  restart)
    case "${2:-}" in
      redis) redis_crash && redis_start ;;
      postgres) pg_stop immediate && pg_start ;;
      rabbitmq) rabbit_stop && rabbit_start ;;
      docker) docker_ctl restart ;;
      *) echo "usage: $0 restart redis|postgres|rabbitmq|docker" >&2; exit 2 ;;
    esac
    log "restarted ${2}"
    ;;
  *) echo "usage: $0 [start|stop|restart SERVICE]" >&2; exit 2 ;;
esac
echo "export ABACO_FAULTS_REDIS_URL=redis://127.0.0.1:$redis_port/"
echo "export ABACO_FAULTS_POSTGRES_URL=postgres://abaco:abaco@127.0.0.1:$pg_port/abaco"
echo "export ABACO_FAULTS_AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
echo "export ABACO_FAULTS_DOCKER=unix:///var/run/$docker_name.sock"
