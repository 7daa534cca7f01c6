#!/usr/bin/env bash
# bench/run.sh — the benchmark harness of issue 6, in one command:
#
#   bash bench/run.sh                   # release build (~15 min on 2 cores the first time)
#   BENCH_PROFILE=debug bash bench/run.sh   # quick run on a debug build (figures not representative)
#   bash bench/run.sh ingest exec       # only some benchmarks: ingest celery exec footprint worker store
#   BENCH_SRC=head bash bench/run.sh    # build the last commit (git archive HEAD into $BENCH_TMP/src,
#                                       # same target/) when the work tree is mid-edit
#
# Steps: build `abaco` (`cargo build [--release] --bin abaco`, progress printed every 30 s) and
# the raw bollard baseline of the exec benchmark (`cargo build [--release] -p abaco-runtime
# --example raw_docker_loop`), both into $CARGO_TARGET_DIR (default target/);
# start Docker, Redis, RabbitMQ and PostgreSQL on loopback (scripts/services.sh); build the test
# images (images/build.sh); give the benchmarks their own vhost / database / Redis db
# (bench/backends.sh); make the load-generator virtualenv bench/.venv (aiohttp, celery) and wrk;
# run each benchmark (one script each, results in bench/out/*.json); print the summary table
# (bench/summary.py, also bench/out/summary.md).
#
# The benchmarks run snapshots of the binaries (copied to $BENCH_TMP) so a concurrent rebuild of
# target/ cannot swap them mid-run. They start their own `abaco` processes on ports 8131-8137 and
# stop them at the end. Environment knobs: see the header of each bench/*.py.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
profile=${BENCH_PROFILE:-release}
export BENCH_TMP=${BENCH_TMP:-/tmp/abaco-bench}
export BENCH_OUT=${BENCH_OUT:-$here/out}
all=(ingest celery exec footprint worker store)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${all[@]}")

say() { printf '\n==> %s\n' "$*"; }
want() { local b; for b in "${selected[@]}"; do [ "$b" = "$1" ] && return 0; done; return 1; }

mkdir -p "$BENCH_OUT" "$BENCH_TMP"
started=$(date +%s)

# --- 1. build ------------------------------------------------------------------------------------
# The target directory: $CARGO_TARGET_DIR if set (made absolute), else target/ of this checkout.
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
export CARGO_TARGET_DIR="$target" # also for BENCH_SRC=head, which builds elsewhere
if [ "$profile" = release ]; then
  build_args=(--release); bin="$target/release/abaco"; loop_bin="$target/release/examples/raw_docker_loop"
else
  build_args=(); bin="$target/debug/abaco"; loop_bin="$target/debug/examples/raw_docker_loop"
fi
src=$root
if [ "${BENCH_SRC:-tree}" = head ]; then
  src="$BENCH_TMP/src"
  rm -rf "$src" && mkdir -p "$src"
  (cd "$root" && git archive HEAD) | tar -x -C "$src"
  echo "    building the last commit $(cd "$root" && git rev-parse --short HEAD) from $src"
fi
say "building abaco ($profile): cargo build ${build_args[*]} --bin abaco, then -p abaco-runtime --example raw_docker_loop (into $target; log: $BENCH_OUT/build.log)"
(cd "$src" && cargo build "${build_args[@]}" --bin abaco >"$BENCH_OUT/build.log" 2>&1 &&
  cargo build "${build_args[@]}" -p abaco-runtime --example raw_docker_loop >>"$BENCH_OUT/build.log" 2>&1) &
build_pid=$!
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 30
  if kill -0 "$build_pid" 2>/dev/null; then
    n=$(grep -c '^ *Compiling' "$BENCH_OUT/build.log" || true)
    last=$(grep '^ *Compiling' "$BENCH_OUT/build.log" | tail -1 | awk '{print $2}' || true)
    echo "    [$(( $(date +%s) - started ))s] $n crates compiled, now: ${last:-resolving}"
  fi
done
if ! wait "$build_pid"; then
  tail -30 "$BENCH_OUT/build.log"
  echo "bench: the build failed (see $BENCH_OUT/build.log)" >&2
  exit 1
fi
tail -1 "$BENCH_OUT/build.log"
export ABACO_BIN="$BENCH_TMP/abaco-$profile"
cp "$bin" "$ABACO_BIN.new" && mv -f "$ABACO_BIN.new" "$ABACO_BIN" # rename: a running old copy does not block it
export RAW_DOCKER_LOOP_BIN="$BENCH_TMP/raw_docker_loop-$profile"
cp "$loop_bin" "$RAW_DOCKER_LOOP_BIN.new" && mv -f "$RAW_DOCKER_LOOP_BIN.new" "$RAW_DOCKER_LOOP_BIN"

# --- 2. services, images, backends, load generators ----------------------------------------------
say "starting services (scripts/services.sh)"
bash "$root/scripts/services.sh" >/dev/null
say "building test images (images/build.sh)"
bash "$root/images/build.sh"
say "preparing benchmark backends (bench/backends.sh)"
bash "$here/backends.sh"
say "load generators"
if ! command -v wrk >/dev/null 2>&1; then
  echo "    installing wrk (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q aiohttp celery
py="$here/.venv/bin/python"
echo "    wrk: $(wrk --version 2>&1 | head -1 | cut -c1-40); python: $("$py" --version); celery $("$py" -c 'import celery; print(celery.__version__)')"

# --- 3. benchmarks -------------------------------------------------------------------------------
machine() {
  echo "machine: nproc $(nproc), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r)," \
    "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), load $(cut -d' ' -f1-3 /proc/loadavg)"
}
machine | tee "$BENCH_OUT/machine.txt"
echo "binary: $profile ($(cd "$root" && git rev-parse --short HEAD 2>/dev/null)$(cd "$root" && git diff --quiet 2>/dev/null || echo '+uncommitted changes'))" |
  tee -a "$BENCH_OUT/machine.txt"
for b in "${selected[@]}"; do # results of the benchmarks that run now; the others' stay
  case "$b" in worker) rm -f "$BENCH_OUT/worker_start.json" ;; *) rm -f "$BENCH_OUT/$b.json" ;; esac
done

cd "$here"
run() { # name, script, args...
  local name=$1; shift
  say "$name  (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$py" "$@" || echo "bench: $name FAILED" >&2
}
want ingest && run "ingest: POST /actors/{id}/messages, mailbox not consumed" ingest.py
want celery && run "ingest baseline: Celery apply_async to the same RabbitMQ" celery_publish.py
want exec && run "execution overhead: message -> COMPLETE vs raw bollard loop (and raw Python loop)" exec_overhead.py
want footprint && run "footprint: VmRSS of abaco serve" footprint.py
want worker && run "worker start: POST /actors -> READY" worker_start.py
want store && run "store scale: GET latencies with many rows" store_scale.py
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$BENCH_OUT/machine.txt"

# --- 4. summary ----------------------------------------------------------------------------------
say "summary ($profile build, $(( $(date +%s) - started )) s in all)"
"$py" summary.py
