#!/usr/bin/env bash
# A second Docker engine on this machine, standing in for a second compute host: its own socket
# (/var/run/abaco-docker2.sock), data root, exec root, pid file and bridge (abaco-br2, 172.29.0.1/24),
# no iptables rules of its own. The test images are copied into it from the first engine.
#   scripts/dockerd2.sh [start]   start it when it is not up (idempotent), load the test images
#   scripts/dockerd2.sh stop      stop it (SIGTERM, wait)
#   scripts/dockerd2.sh restart   stop then start (used by the fault suite)
# Prints the environment the tests read: export ABACO_TEST_DOCKER2=unix:///var/run/abaco-docker2.sock
#
# ABACO_DOCKERD_NAME=abaco-docker<N> (default abaco-docker2) selects another private engine, for
# example abaco-docker3 for the fault suite, which restarts it: socket /var/run/abaco-docker<N>.sock,
# data root /var/lib/abaco-docker<N>, bridge abaco-br<N> on 172.<27+N>.0.1/24, log
# dockerd<N>.log; it prints ABACO_TEST_DOCKER<N>.
set -euo pipefail

name=${ABACO_DOCKERD_NAME:-abaco-docker2}
n=${name#abaco-docker}
case "$n" in
  '' | *[!0-9]*) echo "ABACO_DOCKERD_NAME must be abaco-docker<N>, not $name" >&2; exit 2 ;;
esac
if ((n < 2 || n > 9)); then echo "ABACO_DOCKERD_NAME: N must be 2..9 (got $n)" >&2; exit 2; fi
sock=/var/run/$name.sock
data=/var/lib/$name
exec_root=/var/run/$name
pidfile=/var/run/$name.pid
bridge=abaco-br$n
bridge_ip=172.$((27 + n)).0.1/24
logfile=/var/log/abaco-test/dockerd$n.log

log() { echo "dockerd$n: $*" >&2; }
up() { docker -H "unix://$sock" info >/dev/null 2>&1; }

stop() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local pid
    pid=$(cat "$pidfile")
    log "stopping (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "did not stop within 60s; killing"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$pidfile"
}

start() {
  if up; then
    log "already up"
  else
    command -v dockerd >/dev/null || { log "dockerd is not installed (run scripts/services.sh first)"; exit 1; }
    if ! ip link show "$bridge" >/dev/null 2>&1; then
      ip link add "$bridge" type bridge
      ip addr add "$bridge_ip" dev "$bridge"
    fi
    ip link set "$bridge" up
    mkdir -p "$data" "$exec_root" "$(dirname "$logfile")"
    log "starting on $sock"
    nohup dockerd --host "unix://$sock" --data-root "$data" --exec-root "$exec_root" \
      --pidfile "$pidfile" --bridge "$bridge" --iptables=false --ip-masq=false \
      >>"$logfile" 2>&1 &
    local start=$SECONDS
    until up; do
      if ((SECONDS - start > 60)); then
        log "did not come up within 60s; see $logfile"
        tail -20 "$logfile" >&2
        exit 1
      fi
      sleep 0.5
    done
    log "up"
  fi
  local image
  for image in busybox echo sleep caller actor; do
    if ! docker -H "unix://$sock" image inspect "abaco-test/$image:latest" >/dev/null 2>&1 ||
      [ "$(docker -H "unix://$sock" image inspect -f '{{.Id}}' "abaco-test/$image:latest")" != \
        "$(docker image inspect -f '{{.Id}}' "abaco-test/$image:latest")" ]; then
      docker image inspect "abaco-test/$image:latest" >/dev/null 2>&1 ||
        { log "abaco-test/$image:latest is missing from the first engine (run images/build.sh)"; exit 1; }
      log "loading abaco-test/$image:latest"
      docker save "abaco-test/$image:latest" | docker -H "unix://$sock" load -q >/dev/null
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 [start|stop|restart]" >&2; exit 2 ;;
esac
echo "export ABACO_TEST_DOCKER$n=unix://$sock"
