"""Store-scale benchmark (issue 6, item 5): p50/p99 of GET /actors/{id}, GET .../executions
and GET .../executions/{id} with many actors and executions stored, both backends.

The store cannot be filled from outside except through the API, so the rows are made the way
users make them: BENCH_STORE_ACTORS actors (POST /actors, default 10,000) and
BENCH_STORE_EXECUTIONS executions (POST .../messages, default 1,000,000: one "big" actor gets
BENCH_STORE_BIG of them, default 10,000, the rest are spread over 100 actors), sent by an
aiohttp client at concurrency 32 with no worker running (the mailboxes are purged afterwards,
the execution records stay). The figures say which size they were taken at.

Reads are sequential on one keep-alive connection: 1,000 GET /actors/{id} over random actors,
500 GET .../executions/{id} on the big actor, 200 paged listings (`?limit=100`) of a 1/100
actor and 200 of the big actor at random offsets, then a few unpaged listings (Abaco's shape:
every execution of the actor; BENCH_STORE_BIG_LISTS, default 10 each), whose cost grows with
the actor's execution count.

BENCH_STORE_REUSE=1 skips the fill and measures the rows a previous run left (the embedded
store in $BENCH_TMP/store-embedded, the `abaco_bench` database and Redis db 9): run the script
directly, not through run.sh, whose backends.sh would empty them.

Usage: python bench/store_scale.py [embedded] [distributed]   -> bench/out/store.json
"""

import asyncio
import os
import random
import sys
import time

import aiohttp

from benchlib import Abaco, Api, log, save, summary

ACTORS = int(os.environ.get("BENCH_STORE_ACTORS", "10000"))
EXECS = int(os.environ.get("BENCH_STORE_EXECUTIONS", "1000000"))
BIG = min(EXECS, int(os.environ.get("BENCH_STORE_BIG", "10000")))
BIG_LISTS = int(os.environ.get("BENCH_STORE_BIG_LISTS", "10"))
MEDIUM = 100
CONC = 32
PORTS = {"embedded": 8136, "distributed": 8137}
REUSE = os.environ.get("BENCH_STORE_REUSE") == "1"


async def fill(port, n, make):
    """Runs `make(session, i)` for i in 0..n at concurrency CONC; returns results in order."""
    out = [None] * n
    nxt = iter(range(n))
    conn = aiohttp.TCPConnector(limit=CONC)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=conn) as s:
        async def worker():
            for i in nxt:
                out[i] = await make(s, i)
        await asyncio.gather(*(worker() for _ in range(CONC)))
    return out


async def make_actor(s, i):
    async with s.post("/actors", json={"image": "abaco-test/echo", "name": f"st-{i}"}) as r:
        if r.status != 200:
            raise RuntimeError(f"POST /actors -> {r.status}: {await r.text()}")
        return (await r.json())["result"]["id"]


def timed(api, paths):
    lat = []
    for p in paths:
        t0 = time.perf_counter()
        status, _ = api.call("GET", p)
        lat.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"GET {p} -> {status}")
    return summary(lat)


def run_mode(mode):
    env = {"workers_init_count": "0", "spawner_max_workers_per_host": "0"}
    port = PORTS[mode]
    if mode == "embedded":
        proc = Abaco("store-embedded", "serve", port, env, keep_data=REUSE)
    else:
        proc = Abaco("store-distributed", "api", port, env, distributed=True)
    with proc:
        api = Api(port)
        if REUSE:
            return measure(mode, api, *reused(api))
        t0 = time.monotonic()
        actors = asyncio.run(fill(port, ACTORS, make_actor))
        log(f"{mode}: {ACTORS} actors registered in {time.monotonic() - t0:.1f} s")
        big, medium = actors[0], actors[1:1 + MEDIUM]
        targets = [big] * BIG + [medium[i % len(medium)] for i in range(EXECS - BIG)]

        async def make_exec(s, i):
            async with s.post(f"/actors/{targets[i]}/messages", data="x",
                              headers={"content-type": "text/plain"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"POST messages -> {r.status}: {await r.text()}")
                return (await r.json())["result"]["execution_id"]

        t0 = time.monotonic()
        eids = asyncio.run(fill(port, EXECS, make_exec))
        fill_s = time.monotonic() - t0
        log(f"{mode}: {EXECS} executions created in {fill_s:.1f} s ({EXECS / fill_s:.0f}/s)")
        for a in [big] + medium:
            api.ok("DELETE", f"/actors/{a}/messages")
        res = measure(mode, api, actors, eids[:BIG])
        res["fill_executions_per_s"] = round(EXECS / fill_s, 1)
        api.close()
    return res


def reused(api):
    """The actors (in registration order) and the big actor's execution ids of an earlier fill."""
    actors = [a["id"] for a in api.ok("GET", "/actors")]
    page = api.ok("GET", f"/actors/{actors[0]}/executions")["executions"]
    log(f"reusing {len(actors)} actors; the big actor has {len(page)} executions")
    return actors, [e["id"] for e in page]


def measure(mode, api, actors, big_eids):
    """The timed reads; `big_eids` are the execution ids of actors[0]."""
    big, medium = actors[0], actors[1:1 + MEDIUM]
    rnd = random.Random(6)
    res = {
        "actors": len(actors), "executions": EXECS, "big_actor_executions": BIG,
        "medium_actor_executions": (EXECS - BIG) // MEDIUM,
        "get_actor": timed(api, [f"/actors/{rnd.choice(actors)}" for _ in range(1000)]),
        "get_execution": timed(api, [f"/actors/{big}/executions/{rnd.choice(big_eids)}"
                                     for _ in range(500)]),
        "list_executions_medium_paged": timed(
            api, [f"/actors/{rnd.choice(medium)}/executions?limit=100" for _ in range(200)]),
        "list_executions_big_paged": timed(
            api, [f"/actors/{big}/executions?limit=100&offset={rnd.randrange(BIG)}"
                  for _ in range(200)]),
        "list_executions_medium": timed(api, [f"/actors/{rnd.choice(medium)}/executions"
                                              for _ in range(BIG_LISTS)]),
        "list_executions_big": timed(api, [f"/actors/{big}/executions"] * BIG_LISTS),
    }
    for k in ("get_actor", "get_execution", "list_executions_medium_paged",
              "list_executions_big_paged", "list_executions_medium", "list_executions_big"):
        log(f"{mode} {k}: p50 {res[k]['p50_ms']:.2f} ms  p99 {res[k]['p99_ms']:.2f} ms")
    return res


def main():
    modes = sys.argv[1:] or ["embedded", "distributed"]
    save("store", {"modes": {m: run_mode(m) for m in modes}})


if __name__ == "__main__":
    main()
