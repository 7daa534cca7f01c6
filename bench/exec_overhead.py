"""Execution-overhead benchmark (issue 6, item 2): message -> COMPLETE latency of
`abaco-test/echo` through the platform, against a raw bollard loop of the same image in the same
run: create, start, wait, logs, remove through bollard, the Docker client the platform uses,
with no platform code around it (lib/runtime/examples/raw_docker_loop.rs, driven over a pipe by
`benchlib.BollardDocker`; bench/run.sh builds it). The ratios are against this `raw_bollard`
baseline. A second baseline, `raw_python`, does the same calls from Python `http.client` over
/var/run/docker.sock (`benchlib.Docker`, the baseline of runs A-E); BENCH_EXEC_PYTHON=0 skips it.

Sequential (BENCH_EXEC_SEQ, default 20): one actor with one READY worker; each round sends one
message and polls GET .../executions/{id} every 5 ms until COMPLETE, then does one raw bollard
run and one raw Python run. Interleaving keeps them side by side on this noisy machine.

Saturated (BENCH_EXEC_SAT, default 40): an actor with max_workers 4 and 4 READY workers gets
all its messages at once; throughput = messages / (first POST -> last COMPLETE). Each raw
baseline runs the same number of containers 4 at a time (bollard: 4 tokio tasks sharing one
client, as the platform's workers share one; Python: 4 threads), half before and half after the
platform run (bollard, Python, platform, Python, bollard).

Both sides use the platform's default network (bridge). Mode: embedded (`abaco serve`), and
distributed (`abaco api` + `abaco spawner`) with BENCH_EXEC_MODES=embedded,distributed.

Usage: python bench/exec_overhead.py   -> bench/out/exec.json
"""

import os
import time
from datetime import datetime

from benchlib import Abaco, Api, BollardDocker, Docker, log, save, summary

IMAGE = "abaco-test/echo:latest"
SEQ = int(os.environ.get("BENCH_EXEC_SEQ", "20"))
SAT = int(os.environ.get("BENCH_EXEC_SAT", "40"))
PAR = int(os.environ.get("BENCH_EXEC_PAR", "4"))
MODES = os.environ.get("BENCH_EXEC_MODES", "embedded").split(",")
PYTHON = os.environ.get("BENCH_EXEC_PYTHON", "1") != "0"
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


def p50_phases(phases):
    return {k: round(sorted(p[k] for p in phases)[len(phases) // 2] * 1000, 1)
            for k in ("create", "start", "wait", "logs_rm")}


def run_mode(mode):
    env = {"workers_init_count": "1"}
    if mode == "embedded":
        procs = [Abaco("exec-embedded", "serve", PORT, env)]
    else:
        procs = [Abaco("exec-distributed", "api", PORT, env, distributed=True),
                 Abaco("exec-distributed", "spawner", None, env, distributed=True)]
    # The baselines, by name; the ratios use the first.
    raws = {"raw_bollard": BollardDocker()}
    if PYTHON:
        raws["raw_python"] = Docker()
    try:
        for p in procs:
            p.start()
        api = Api(PORT)
        for raw in raws.values():
            raw.run_once(IMAGE, {"MSG": "warm-up"})

        # --- sequential ---------------------------------------------------------------------
        actor = api.register(f"exec-seq-{mode}", image=IMAGE)
        wait_workers(api, actor, 1)
        eid = api.ok("POST", f"/actors/{actor}/messages", raw="warm-up")["execution_id"]
        wait_complete(api, actor, eid)
        plat, queue_wait, run_time = [], [], []
        phases = {name: [] for name in raws}
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
            for name, raw in raws.items():
                phases[name].append(raw.run_once(IMAGE, {"MSG": f"msg {i}"}))
        seq = {"n": SEQ, "baseline": "raw_bollard", "platform": summary(plat)}
        for name in raws:
            seq[name] = summary([p["total"] for p in phases[name]])
            seq[f"{name}_phases_p50_ms"] = p50_phases(phases[name])
        seq["platform_received_to_start"] = summary(queue_wait)
        seq["platform_start_to_finish"] = summary(run_time)
        for name in raws:
            suffix = "" if name == "raw_bollard" else "_" + name.removeprefix("raw_")
            seq[f"ratio_p50{suffix}"] = round(seq["platform"]["p50_ms"] / seq[name]["p50_ms"], 3)
            seq[f"ratio_mean{suffix}"] = round(seq["platform"]["mean_ms"] / seq[name]["mean_ms"], 3)
        log(f"{mode} sequential: platform p50 {seq['platform']['p50_ms']:.0f} ms, "
            + ", ".join(f"{name} p50 {seq[name]['p50_ms']:.0f} ms" for name in raws)
            + f"; ratio (bollard) {seq['ratio_p50']:.2f}")
        api.ok("DELETE", f"/actors/{actor}")

        # --- saturated ----------------------------------------------------------------------
        actor = api.register(f"exec-sat-{mode}", image=IMAGE, max_workers=PAR)
        api.ok("POST", f"/actors/{actor}/workers", body={"num": PAR})
        wait_workers(api, actor, PAR)
        # bollard, Python, platform, Python, bollard: each baseline is as near the platform.
        raw_elapsed = {name: 0.0 for name in raws}
        raw_times = {name: [] for name in raws}

        def raw_half(name, n):
            elapsed, times = raws[name].parallel(IMAGE, n, PAR, {"MSG": "bench"})
            raw_elapsed[name] += elapsed
            raw_times[name].extend(times)

        for name in raws:
            raw_half(name, SAT // 2)
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
        for name in reversed(list(raws)):
            raw_half(name, SAT - SAT // 2)
        sat = {
            "n": SAT,
            "parallel": PAR,
            "baseline": "raw_bollard",
            "platform_per_s": round(SAT / plat_elapsed, 3),
            "platform_latency": summary(lat),
        }
        for name in raws:
            suffix = "" if name == "raw_bollard" else "_" + name.removeprefix("raw_")
            sat[f"{name}_per_s"] = round(SAT / raw_elapsed[name], 3)
            sat[f"{name}_latency"] = summary(raw_times[name])
            sat[f"throughput_ratio{suffix}"] = round(sat["platform_per_s"] / sat[f"{name}_per_s"], 3)
        log(f"{mode} saturated: platform {sat['platform_per_s']:.2f}/s, "
            + ", ".join(f"{name} {sat[f'{name}_per_s']:.2f}/s" for name in raws)
            + f"; ratio (bollard) {sat['throughput_ratio']:.2f}")
        api.ok("DELETE", f"/actors/{actor}")
        api.close()
        return {"sequential": seq, "saturated": sat}
    finally:
        for raw in raws.values():
            raw.close()
        for p in reversed(procs):
            p.stop()


def main():
    save("exec", {"image": IMAGE, "modes": {m: run_mode(m) for m in MODES}})


if __name__ == "__main__":
    main()
