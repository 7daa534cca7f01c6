"""Ingest benchmark (issue 6, item 1): accepted messages/s and p50/p99 latency of
`POST /actors/{id}/messages` at fixed concurrency levels, with the mailbox not consumed.

For each mode:
  embedded     `abaco serve` (SQLite + in-process durable channels) with
               `spawner_max_workers_per_host=0`, so the spawner never starts the worker that a
               message requests: messages stay in the mailbox.
  distributed  `abaco api` alone (Redis + PostgreSQL + RabbitMQ): no spawner runs at all.
The actor is registered with `workers_init_count=0` and the autoscaler off. For each
concurrency level (BENCH_INGEST_LEVELS, default 1,16,64) wrk runs closed-loop for
BENCH_INGEST_SECONDS (default 5) with one connection per concurrent client; the mailbox length
is checked against the accepted count (nothing consumed), then purged. A last paced run
measures p99 at half the target rate (or half the measured peak when the peak is lower).

The load generator is wrk (C, epoll, one thread) with bench/post.lua; it shares the 2 cores
with the server, as any client on this machine would.

Usage: python bench/ingest.py [embedded] [distributed]   -> bench/out/ingest.json
"""

import json
import os
import subprocess
import sys
import time

from benchlib import Abaco, Api, BENCH_DIR, log, save

LEVELS = [int(x) for x in os.environ.get("BENCH_INGEST_LEVELS", "1,16,64").split(",")]
SECONDS = int(os.environ.get("BENCH_INGEST_SECONDS", "5"))
TARGETS = {"embedded": 20000, "distributed": 10000}
PORTS = {"embedded": 8131, "distributed": 8132}


def wrk(url, connections, seconds, delay_ms=0):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(BENCH_DIR / "post.lua"), url]
    if delay_ms:
        cmd += ["--", str(delay_ms)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    r = json.loads(line)
    secs = r["duration_us"] / 1e6
    ok = r["requests"] - r["non2xx"]
    return {
        "concurrency": connections,
        "seconds": round(secs, 2),
        "requests": r["requests"],
        "errors": r["non2xx"] + r["connect_errors"] + r["read_errors"] + r["write_errors"]
        + r["timeouts"],
        "accepted": ok,
        "accepted_per_s": round(ok / secs, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
    }


def mailbox(api, actor):
    return api.ok("GET", f"/actors/{actor}/messages")["messages"]


def run_mode(mode):
    env = {"workers_init_count": "0", "spawner_max_workers_per_host": "0"}
    port = PORTS[mode]
    if mode == "embedded":
        proc = Abaco("ingest-embedded", "serve", port, env)
    else:
        proc = Abaco("ingest-distributed", "api", port, env, distributed=True)
    result = {"mode": mode, "levels": []}
    with proc:
        api = Api(port)
        actor = api.register(f"ingest-{mode}")
        url = f"http://127.0.0.1:{port}/actors/{actor}/messages"
        log(f"{mode}: actor {actor}; warm-up 2 s")
        wrk(url, 16, 2)
        api.ok("DELETE", f"/actors/{actor}/messages")
        cpu0 = proc.cpu_seconds()
        for c in LEVELS:
            r = wrk(url, c, SECONDS)
            queued = mailbox(api, actor)
            r["mailbox_after"] = queued
            api.ok("DELETE", f"/actors/{actor}/messages")
            log(f"{mode} c={c}: {r['accepted_per_s']:.0f} msg/s  p50 {r['p50_ms']:.2f} ms  "
                f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  mailbox {queued}")
            result["levels"].append(r)
        result["server_cpu_s"] = round(proc.cpu_seconds() - cpu0, 2)
        result["server_rss_kb_after"] = proc.rss_kb()
        peak = max(r["accepted_per_s"] for r in result["levels"])
        # p99 at half the target rate; at half the measured peak when the target is out of reach.
        half = TARGETS[mode] / 2 if peak >= TARGETS[mode] else peak / 2
        delay_ms = 5
        conns = max(1, min(256, round(half * delay_ms / 1000)))
        r = wrk(url, conns, SECONDS, delay_ms=delay_ms)
        r["asked_rate"] = round(half)
        r["basis"] = "half target" if peak >= TARGETS[mode] else "half measured peak"
        api.ok("DELETE", f"/actors/{actor}/messages")
        log(f"{mode} paced ~{half:.0f}/s ({r['basis']}): achieved {r['accepted_per_s']:.0f}/s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
        result["paced"] = r
        result["peak_per_s"] = peak
        result["target_per_s"] = TARGETS[mode]
        api.ok("DELETE", f"/actors/{actor}")
        api.close()
    return result


def main():
    modes = sys.argv[1:] or ["embedded", "distributed"]
    results = {"seconds_per_level": SECONDS, "modes": {}}
    for mode in modes:
        results["modes"][mode] = run_mode(mode)
    save("ingest", results)


if __name__ == "__main__":
    main()
