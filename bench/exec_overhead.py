"""Execution-overhead benchmark (issue 6, item 2): message -> COMPLETE latency of
`abaco-test/echo` through the platform, against a raw Docker Engine API loop (create, start,
wait, logs, remove over the unix socket) of the same image, in the same run.

Sequential (BENCH_EXEC_SEQ, default 20): one actor with one READY worker; each round sends one
message and polls GET .../executions/{id} every 5 ms until COMPLETE, then does one raw Docker
run. Alternating the two keeps them side by side on this noisy machine.

Saturated (BENCH_EXEC_SAT, default 40): an actor with max_workers 4 and 4 READY workers gets
all its messages at once; throughput = messages / (first POST -> last COMPLETE). The raw
baseline runs the same number of containers from 4 threads (4 at a time), half before and half
after the platform run.

Both sides use the platform's default network (bridge). Mode: embedded (`abaco serve`), and
distributed (`abaco api` + `abaco spawner`) with BENCH_EXEC_MODES=embedded,distributed.

Usage: python bench/exec_overhead.py   -> bench/out/exec.json
"""

import os
import threading
import time
from datetime import datetime

from benchlib import Abaco, Api, Docker, log, save, summary

IMAGE = "abaco-test/echo:latest"
SEQ = int(os.environ.get("BENCH_EXEC_SEQ", "20"))
SAT = int(os.environ.get("BENCH_EXEC_SAT", "40"))
PAR = int(os.environ.get("BENCH_EXEC_PAR", "4"))
MODES = os.environ.get("BENCH_EXEC_MODES", "embedded").split(",")
PORT = 8133
FINAL = {"COMPLETE", "ERROR", "FAILED"}


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def wait_workers(api, actor, n, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws = api.ok("GET", f"/actors/{actor}/workers")
        if sum(1 for w in ws if w["status"] == "READY") >= n:
            return
        time.sleep(0.05)
    raise RuntimeError(f"actor {actor}: {n} workers not READY after {timeout}s")


def wait_complete(api, actor, eid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex = api.ok("GET", f"/actors/{actor}/executions/{eid}")
        if ex["status"] in FINAL:
            return ex
        time.sleep(0.005)
    raise RuntimeError(f"execution {eid} not final after {timeout}s")


def raw_parallel(n, par):
    """n raw runs from `par` threads; returns (elapsed seconds, list of per-run seconds)."""
    lock = threading.Lock()
    todo = [n]
    times = []

    def loop():
        d = Docker()
        while True:
            with lock:
                if todo[0] == 0:
                    return
                todo[0] -= 1
            times.append(d.run_once(IMAGE, {"MSG": "bench"})["total"])

    threads = [threading.Thread(target=loop) for _ in range(par)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, times


def run_mode(mode):
    env = {"workers_init_count": "1"}
    if mode == "embedded":
        procs = [Abaco("exec-embedded", "serve", PORT, env)]
    else:
        procs = [Abaco("exec-distributed", "api", PORT, env, distributed=True),
                 Abaco("exec-distributed", "spawner", None, env, distributed=True)]
    for p in procs:
        p.start()
    try:
        api = Api(PORT)
        docker = Docker()
        docker.run_once(IMAGE, {"MSG": "warm-up"})

        # --- sequential ---------------------------------------------------------------------
        actor = api.register(f"exec-seq-{mode}", image=IMAGE)
        wait_workers(api, actor, 1)
        eid = api.ok("POST", f"/actors/{actor}/messages", raw="warm-up")["execution_id"]
        wait_complete(api, actor, eid)
        plat, raw, phases, queue_wait, run_time = [], [], [], [], []
        for i in range(SEQ):
            t0 = time.perf_counter()
            eid = api.ok("POST", f"/actors/{actor}/messages", raw=f"msg {i}")["execution_id"]
            ex = wait_complete(api, actor, eid)
            plat.append(time.perf_counter() - t0)
            if ex["status"] != "COMPLETE":
                raise RuntimeError(f"execution {eid} ended {ex['status']}")
            recv, start, fin = (ts(ex.get("message_received_time")), ts(ex.get("start_time")),
                                ts(ex.get("finish_time")))
            if recv and start:
                queue_wait.append(start - recv)
            if start and fin:
                run_time.append(fin - start)
            ph = docker.run_once(IMAGE, {"MSG": f"msg {i}"})
            raw.append(ph["total"])
            phases.append(ph)
        seq = {
            "n": SEQ,
            "platform": summary(plat),
            "raw_docker": summary(raw),
            "raw_phases_p50_ms": {k: round(sorted(p[k] for p in phases)[len(phases) // 2] * 1000, 1)
                                  for k in ("create", "start", "wait", "logs_rm")},
            "platform_received_to_start": summary(queue_wait),
            "platform_start_to_finish": summary(run_time),
        }
        seq["ratio_p50"] = round(seq["platform"]["p50_ms"] / seq["raw_docker"]["p50_ms"], 3)
        seq["ratio_mean"] = round(seq["platform"]["mean_ms"] / seq["raw_docker"]["mean_ms"], 3)
        log(f"{mode} sequential: platform p50 {seq['platform']['p50_ms']:.0f} ms, raw docker p50 "
            f"{seq['raw_docker']['p50_ms']:.0f} ms, ratio {seq['ratio_p50']:.2f}")
        api.ok("DELETE", f"/actors/{actor}")

        # --- saturated ----------------------------------------------------------------------
        actor = api.register(f"exec-sat-{mode}", image=IMAGE, max_workers=PAR)
        api.ok("POST", f"/actors/{actor}/workers", body={"num": PAR})
        wait_workers(api, actor, PAR)
        raw_a, raw_times_a = raw_parallel(SAT // 2, PAR)
        t0 = time.perf_counter()
        sent = []
        for i in range(SAT):
            eid = api.ok("POST", f"/actors/{actor}/messages", raw=f"sat {i}")["execution_id"]
            sent.append((eid, time.perf_counter()))
        lat = []
        for eid, t_sent in sent:
            ex = wait_complete(api, actor, eid, timeout=600)
            if ex["status"] != "COMPLETE":
                raise RuntimeError(f"execution {eid} ended {ex['status']}")
        plat_elapsed = time.perf_counter() - t0
        # Per-message latency from the recorded times (polling order would skew it).
        for eid, _ in sent:
            ex = api.ok("GET", f"/actors/{actor}/executions/{eid}")
            recv, fin = ts(ex.get("message_received_time")), ts(ex.get("finish_time"))
            if recv and fin:
                lat.append(fin - recv)
        raw_b, raw_times_b = raw_parallel(SAT - SAT // 2, PAR)
        raw_elapsed = raw_a + raw_b
        sat = {
            "n": SAT,
            "parallel": PAR,
            "platform_per_s": round(SAT / plat_elapsed, 3),
            "raw_docker_per_s": round(SAT / raw_elapsed, 3),
            "platform_latency": summary(lat),
            "raw_docker_latency": summary(raw_times_a + raw_times_b),
        }
        sat["throughput_ratio"] = round(sat["platform_per_s"] / sat["raw_docker_per_s"], 3)
        log(f"{mode} saturated: platform {sat['platform_per_s']:.2f}/s, raw docker "
            f"{sat['raw_docker_per_s']:.2f}/s, ratio {sat['throughput_ratio']:.2f}")
        api.ok("DELETE", f"/actors/{actor}")
        api.close()
        return {"sequential": seq, "saturated": sat}
    finally:
        for p in reversed(procs):
            p.stop()


def main():
    save("exec", {"image": IMAGE, "modes": {m: run_mode(m) for m in MODES}})


if __name__ == "__main__":
    main()
