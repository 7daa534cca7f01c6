#!/usr/bin/env bash
# Runs the whole test suite: installs and starts Docker, Redis, RabbitMQ and PostgreSQL on
# loopback when missing (scripts/services.sh), builds the test images, starts a second Docker engine
# (scripts/dockerd2.sh), then checks formatting,
# lints and runs every test, and last the fault suite (scripts/faults.sh). With CI set, a test
# whose service is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services (Docker, Redis, RabbitMQ, PostgreSQL)"
eval "$(bash scripts/services.sh)"

step "test images"
bash images/build.sh

step "a second Docker engine (a second compute host)"
eval "$(bash scripts/dockerd2.sh)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "deployment files (compose, ansible)"
cargo build --bin abaco
ABACO_BIN="$PWD/target/debug/abaco" bash scripts/check-deploy.sh

step "cargo test"
cargo test --workspace --no-fail-fast -- --test-threads 4

step "fault suite (kill -9 and service restarts under load, on private services)"
bash scripts/faults.sh
