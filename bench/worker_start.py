"""Worker-start benchmark (issue 6, item 4): time from `POST /actors` to the actor's status
READY (its first worker is up), BENCH_WORKER_N times (default 20), sequentially.

A fresh embedded `abaco serve` with workers_init_count=1 (registration requests one worker);
each iteration registers abaco-test/echo and polls GET /actors/{id} every 2 ms. Reported: p50,
p90, max. For scale, the same run measures one raw Docker create+start+wait+remove of the image
(what a worker start costs when a worker is a container, as in Abaco, before any Python starts),
and the issue's reference is Abaco's documented "10 seconds or more".

Usage: python bench/worker_start.py   -> bench/out/worker_start.json
"""

import os
import time

from benchlib import Abaco, Api, Docker, log, save, summary

N = int(os.environ.get("BENCH_WORKER_N", "20"))
PORT = 8135


def main():
    env = {"workers_init_count": "1", "spawner_max_workers_per_host": "1000"}
    times = []
    with Abaco("worker-start", "serve", PORT, env):
        api = Api(PORT)
        api.register("ws-warm-up")
        time.sleep(1)
        for i in range(N):
            t0 = time.perf_counter()
            actor = api.register(f"ws-{i}")
            while True:
                a = api.ok("GET", f"/actors/{actor}")
                if a["status"] == "READY":
                    break
                if a["status"] == "ERROR":
                    raise RuntimeError(f"actor {actor}: {a['status_message']}")
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"actor {actor} not READY after 120 s")
                time.sleep(0.002)
            times.append(time.perf_counter() - t0)
        api.close()
    docker = Docker()
    raw = [docker.run_once("abaco-test/echo:latest", {"MSG": "x"})["total"] for _ in range(5)]
    res = {"n": N, "post_to_ready": summary(times), "raw_container_run": summary(raw),
           "abaco_documented_s": 10}
    log(f"POST /actors -> READY: p50 {res['post_to_ready']['p50_ms']:.1f} ms, "
        f"max {res['post_to_ready']['max_ms']:.1f} ms (a raw container run: "
        f"{res['raw_container_run']['p50_ms']:.0f} ms)")
    save("worker_start", res)


if __name__ == "__main__":
    main()
