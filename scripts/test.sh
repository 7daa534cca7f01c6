#!/usr/bin/env bash
# Runs the whole test suite: installs and starts Docker, Redis, RabbitMQ and PostgreSQL on
# loopback when missing (scripts/services.sh), builds the test images, starts a second Docker engine
# (scripts/dockerd2.sh), then checks formatting,
# lints and runs every test, and last the fault suite (scripts/faults.sh). With CI set, a test
# whose service is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every step runs under a time limit (its own cap, and never past the run's budget of
# ABACO_TEST_BUDGET seconds, 85 minutes by default: CI stops at 90), so a hang fails the run
# naming the step instead of silently eating the budget.
budget=${ABACO_TEST_BUDGET:-5100}
limit() { # cap seconds, command...
  local cap=$1 left=$((budget - SECONDS))
  shift
  ((left < cap)) && cap=$left
  if ((cap <= 0)); then
    echo "test.sh: the run's budget of ${budget}s is spent before: $*" >&2
    return 1
  fi
  local rc=0
  timeout -k 30 "$cap" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "test.sh: '$*' did not finish within ${cap}s; stopped it" >&2
  fi
  return "$rc"
}

step "services (Docker, Redis, RabbitMQ, PostgreSQL)"
services_env=$(limit 1200 bash scripts/services.sh)
eval "$services_env"

step "test images"
limit 900 bash images/build.sh

step "a second Docker engine (a second compute host)"
dockerd2_env=$(limit 300 bash scripts/dockerd2.sh)
eval "$dockerd2_env"

step "cargo fmt --check"
limit 300 cargo fmt --all -- --check

step "cargo clippy -D warnings"
limit 1800 cargo clippy --workspace --all-targets -- -D warnings

step "deployment files (compose, ansible)"
limit 1500 cargo build --bin abaco
ABACO_BIN="$PWD/target/debug/abaco" limit 600 bash scripts/check-deploy.sh

step "cargo test"
limit 2700 cargo test --workspace --no-fail-fast -- --test-threads 4

step "fault suite (kill -9 and service restarts under load, on private services)"
limit 1500 bash scripts/faults.sh
