#!/usr/bin/env bash
# bench/profile.sh — where the ingest path spends its time, for docs/performance.md.
#
#   bash bench/profile.sh [embedded|distributed] [concurrency] [seconds]
#
# Starts one `abaco` (embedded: `abaco serve` with no worker allowed to start; distributed:
# `abaco api` alone), registers an actor, and while wrk POSTs messages at the given concurrency
# (default 16, 10 s) it records:
#   - a CPU profile of the server: perf record -e cpu-clock (hardware counters are not exposed
#     in this VM), flat by symbol -> bench/out/profile-<mode>.txt
#   - its system calls: strace -c -f (counts and time per call, e.g. fsync) ->
#     bench/out/strace-<mode>.txt, in a second, separate wrk run (strace slows the process)
#   - CPU seconds of the server per accepted message (from /proc/<pid>/stat).
# Uses the binary in $ABACO_BIN (default: target/release/abaco), ports 8138/8139, and the
# benchmark backends of bench/backends.sh. Needs perf and strace (apt-get install linux-perf strace).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=${1:-embedded}
conc=${2:-16}
secs=${3:-10}
bin=${ABACO_BIN:-$here/../target/release/abaco}
out=${BENCH_OUT:-$here/out}
tmp=${BENCH_TMP:-/tmp/abaco-bench}/profile-$mode
mkdir -p "$out" "$tmp"
rm -rf "$tmp/data"

envs=(spawner_host_queues=bench workers_autoscaling=false workers_init_count=0
  spawner_max_workers_per_host=0 logs_level=warn "store_data_dir=$tmp/data")
if [ "$mode" = embedded ]; then
  port=8138; cmd=serve
else
  port=8139; cmd=api
  envs+=(store_backend=distributed store_redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/9}
    store_postgres_url=${BENCH_POSTGRES_URL:-postgres://abaco:abaco@127.0.0.1:5432/abaco_bench}
    rabbit_uri=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/abaco_bench})
fi
envs+=("web_bind=127.0.0.1:$port")

(cd "$tmp" && exec env "${envs[@]}" "$bin" "$cmd" >"$tmp/server.log" 2>&1) &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "localhost:$port/actors" >/dev/null && break; sleep 0.05; done
actor=$(curl -sf -X POST "localhost:$port/actors" -H 'content-type: application/json' \
  -d '{"image":"abaco-test/echo","name":"profile"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
url="http://127.0.0.1:$port/actors/$actor/messages"
wrk -t1 -c"$conc" -d2s -s "$here/post.lua" "$url" >/dev/null # warm-up
curl -sf -X DELETE "$url" >/dev/null

# perf report, flat, without its comment lines and the empty columns it pads lines with.
report() {
  perf report -i "$tmp/perf.data" --stdio --no-children -g none --sort "$1" 2>/dev/null >"$tmp/report.txt" || true
  grep -v '^#' "$tmp/report.txt" | grep -v '^$' | sed -e 's/[[:space:]-]*$//' | cut -c1-200 || true
}
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
perf record -e cpu-clock -F 999 -g -p "$pid" -o "$tmp/perf.data" -- sleep "$secs" >/dev/null 2>&1 &
perf_pid=$!
res=$(wrk -t1 -c"$conc" -d"${secs}s" -s "$here/post.lua" "$url" | grep '^{')
wait "$perf_pid" || true
c1=$(cpu)
reqs=$(echo "$res" | sed 's/.*"requests": \([0-9]*\).*/\1/')
hz=$(getconf CLK_TCK)
{
  echo "# perf profile of abaco $cmd ($mode), wrk -c$conc for ${secs}s: $res"
  echo "# server CPU: $(( (c1 - c0) * 1000 / hz )) ms for $reqs requests =" \
    "$(awk -v c=$((c1 - c0)) -v r="$reqs" -v hz="$hz" 'BEGIN{printf "%.1f", c/hz*1e6/r}') us CPU per message"
  echo "# flat profile by symbol (self time), top 45:"
  report dso,symbol | head -45
  echo
  echo "# by thread name (comm):"
  report comm | head -10
} >"$out/profile-$mode.txt"
curl -sf -X DELETE "$url" >/dev/null

if command -v strace >/dev/null 2>&1; then
  strace -c -f -p "$pid" -o "$out/strace-$mode.txt" &
  st=$!
  sleep 0.5
  res2=$(wrk -t1 -c"$conc" -d5s -s "$here/post.lua" "$url" | grep '^{')
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  sed -i "1i # strace -c -f of abaco $cmd ($mode) during wrk -c$conc 5s (slowed by strace): $res2" "$out/strace-$mode.txt"
fi
curl -sf -X DELETE "$url" >/dev/null
echo "profile: wrote $out/profile-$mode.txt and $out/strace-$mode.txt"
head -3 "$out/profile-$mode.txt"
