"""Footprint benchmark (issue 6, item 3): resident memory (VmRSS from /proc/<pid>/status) of
`abaco serve` idle, with 100 actors of one READY worker each, and with 1,000.

One fresh embedded `abaco serve` (workers_init_count=1 so each registered actor gets one
worker; autoscaler off; spawner_max_workers_per_host raised above the actor count). Actors are
registered with abaco-test/echo and never sent a message, so no container runs: a worker here is
the platform's own cost of an idle mailbox consumer. After each step the script waits until every
actor is READY, lets the process settle for BENCH_SETTLE seconds (default 5) and reads VmRSS;
it also reports the CPU the idle process burns over that window (idle workers should cost none).

Usage: python bench/footprint.py   -> bench/out/footprint.json
"""

import os
import time

from benchlib import Abaco, Api, log, save

STEPS = [int(x) for x in os.environ.get("BENCH_FOOTPRINT_STEPS", "100,1000").split(",")]
SETTLE = float(os.environ.get("BENCH_SETTLE", "5"))
PORT = 8134


def all_ready(api, expected):
    actors = api.ok("GET", "/actors")
    ready = sum(1 for a in actors if a["status"] == "READY")
    return ready, len(actors) == expected and ready == expected


def measure(proc, label, n):
    time.sleep(1)
    cpu0, t0 = proc.cpu_seconds(), time.monotonic()
    time.sleep(SETTLE)
    cpu = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    rss = proc.rss_kb()
    log(f"{label}: VmRSS {rss / 1024:.1f} MiB, {proc.threads()} threads, "
        f"idle CPU {cpu * 100:.1f}% of a core")
    return {"actors": n, "rss_kb": rss, "threads": proc.threads(),
            "idle_cpu_pct_of_core": round(cpu * 100, 2)}


def main():
    env = {"workers_init_count": "1", "spawner_max_workers_per_host": "100000",
           "spawner_max_workers_total": "100000"}
    points = []
    with Abaco("footprint", "serve", PORT, env) as proc:
        api = Api(PORT)
        points.append(measure(proc, "idle", 0))
        registered = 0
        for target in STEPS:
            t0 = time.monotonic()
            while registered < target:
                api.register(f"fp-{registered}")
                registered += 1
            reg_s = time.monotonic() - t0
            deadline = time.monotonic() + 600
            while True:
                ready, done = all_ready(api, registered)
                if done:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {ready}/{registered} actors READY after 600 s")
                time.sleep(0.5)
            log(f"{registered} actors registered in {reg_s:.1f} s, all READY after "
                f"{time.monotonic() - t0:.1f} s")
            points.append(measure(proc, f"{registered} actors / workers", registered))
        api.close()
    idle = points[0]["rss_kb"]
    for p in points[1:]:
        p["per_worker_kb"] = round((p["rss_kb"] - idle) / p["actors"], 1)
    save("footprint", {"points": points})


if __name__ == "__main__":
    main()
