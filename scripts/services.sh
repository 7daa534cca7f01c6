#!/usr/bin/env bash
# Installs (apt-get) and starts the services the test suite needs, on loopback:
# Docker engine, Redis, RabbitMQ and PostgreSQL. Idempotent: a running service is left alone.
# Redis and RabbitMQ are test instances: one that is not running is started on an empty data
# directory under /var/lib/abaco-test (what an earlier run left there is nobody's), so a machine
# that kept old queues and keys starts them as fast as a fresh one.
# Prints the environment the tests read (ABACO_TEST_*), so callers can `eval "$(scripts/services.sh)"`.
set -euo pipefail

log() { echo "services: $*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || need_pkgs+=(rabbitmq-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -q '^sh$' || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi

wait_for() { # name, deadline seconds, command... (each probe is cut off after 20 s: a probe of a
  # half-started service, rabbitmqctl above all, can otherwise hang and take the deadline with it)
  local name=$1 deadline=$2; shift 2
  local start=$SECONDS
  until timeout -k 5 20 "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > deadline )); then log "$name did not come up within ${deadline}s"; return 1; fi
    sleep 0.5
  done
  log "$name is up"
}

mkdir -p /var/log/abaco-test

# Docker engine.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log/abaco-test
  nohup dockerd </dev/null >/var/log/abaco-test/dockerd.log 2>&1 &
  wait_for dockerd 60 docker info
fi

# Redis on 127.0.0.1:6379.
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  log "starting redis-server"
  rm -rf /var/lib/abaco-test/redis && mkdir -p /var/lib/abaco-test/redis
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly yes \
    --dir /var/lib/abaco-test/redis --logfile /var/log/abaco-test/redis.log >/dev/null
  wait_for redis 30 redis-cli -h 127.0.0.1 ping
fi

# RabbitMQ on 127.0.0.1:5672. A node that does not come up is killed and started once more
# before giving up with the tail of its log.
shared_rabbit_pids() { # the beam processes started on /var/lib/abaco-test/rabbitmq
  local pid
  for pid in $(pgrep -x beam.smp || true); do
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
      grep -qx 'RABBITMQ_MNESIA_BASE=/var/lib/abaco-test/rabbitmq/mnesia' && echo "$pid"
  done
  return 0
}
export -f shared_rabbit_pids
start_rabbit() {
  rm -rf /var/lib/abaco-test/rabbitmq
  mkdir -p /var/lib/abaco-test/rabbitmq/mnesia /var/lib/abaco-test/rabbitmq/log
  chown -R rabbitmq: /var/lib/abaco-test/rabbitmq
  export RABBITMQ_MNESIA_BASE=/var/lib/abaco-test/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=/var/lib/abaco-test/rabbitmq/log
  nohup rabbitmq-server </dev/null >>/var/log/abaco-test/rabbitmq.log 2>&1 &
  wait_for rabbitmq 120 rabbitmqctl -q await_startup --timeout 15
}
if ! timeout -k 5 20 rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting rabbitmq-server"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  if ! start_rabbit; then
    tail -30 /var/log/abaco-test/rabbitmq.log >&2
    # Only this node (found by its data directory): the fault suite's private node may be
    # running beside it.
    log "killing the rabbitmq node, then starting it once more"
    for pid in $(shared_rabbit_pids); do kill -KILL "$pid" || true; done
    wait_for "the old rabbitmq node to be gone" 30 bash -c '[ -z "$(shared_rabbit_pids)" ]'
    start_rabbit || { tail -30 /var/log/abaco-test/rabbitmq.log >&2; exit 1; }
  fi
fi

# PostgreSQL on 127.0.0.1:5432 with user/password abaco/abaco and database abaco.
if ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  log "starting postgresql"
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | grep -q .; then pg_createcluster "$ver" main >&2; fi
  pg_ctlcluster "$ver" main start >&2 || true
  wait_for postgresql 60 pg_isready -h 127.0.0.1 -q
fi
su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='abaco'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE abaco LOGIN SUPERUSER PASSWORD 'abaco'\"" >&2
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='abaco'\"" | grep -q 1 ||
  su postgres -c "createdb -O abaco abaco" >&2

echo "export ABACO_TEST_REDIS_URL=redis://127.0.0.1:6379/"
echo "export ABACO_TEST_POSTGRES_URL=postgres://abaco:abaco@127.0.0.1:5432/abaco"
echo "export ABACO_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
echo "export ABACO_TEST_DOCKER=unix:///var/run/docker.sock"
