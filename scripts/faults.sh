#!/usr/bin/env bash
# Runs the fault suite (cli/tests/faults.rs): a steady load of messages against separate `abaco
# api`, `abaco spawner` and `abaco health` processes while each is killed with kill -9 and each
# service (RabbitMQ, Redis, PostgreSQL, a Docker engine) is restarted; it prints a table of
# messages sent, completed, lost and duplicated per fault and fails if anything was lost.
# The services are private instances (scripts/fault-services.sh), never the shared ones.
# scripts/test.sh calls it last, so CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The shared services and the test images (the private Docker engine copies them from the first).
eval "$(bash scripts/services.sh)"
bash images/build.sh
# The private services are started fresh by the suite and stopped when it ends, pass or fail.
trap 'bash scripts/fault-services.sh stop >/dev/null || true' EXIT
ABACO_FAULTS=1 cargo test -p abaco --test faults -- --nocapture
