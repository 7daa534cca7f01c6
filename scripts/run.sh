#!/usr/bin/env bash
# Runs the platform on this machine: `abaco serve` (every component in one process, embedded
# store under ./abaco-data) on 127.0.0.1:8000. Installs and starts the Docker engine when missing,
# and builds the small example images of images/ so the README's quickstart works offline.
# Extra arguments go to `abaco` (e.g. scripts/run.sh --data-dir /srv/abaco).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dockerd >/dev/null 2>&1; then
  echo "==> installing the Docker engine (apt-get install docker.io)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io busybox-static
fi
if ! docker info >/dev/null 2>&1; then
  echo "==> starting dockerd"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "==> example images"
bash images/build.sh
echo "==> building abaco (release)"
cargo build --release --bin abaco
exec ./target/release/abaco "$@" serve
