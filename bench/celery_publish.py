"""Celery baseline of the ingest benchmark (issue 6, item 1): how fast Celery publishes tasks
with `apply_async` to the same RabbitMQ (vhost abaco_bench) in the same run.

Runs in bench/.venv (pip install celery). Nothing consumes the queue; it is purged at the end.
Three producers, each for BENCH_CELERY_SECONDS (default 5):
  default          one process, Celery's defaults (persistent messages, durable queue, no
                   publisher confirms: apply_async returns once the frame is written)
  confirm_publish  one process, broker_transport_options={"confirm_publish": True}: apply_async
                   returns after RabbitMQ confirmed the message, the same guarantee that the
                   platform's 200 gives (durable before acceptance)
  default x2       two processes at once (the machine has 2 cores), rates added
Per-call latency of apply_async is recorded too.

Usage: python bench/celery_publish.py   -> bench/out/celery.json
"""

import multiprocessing as mp
import os
import time

from celery import Celery

from benchlib import AMQP_URL, log, save, summary

SECONDS = float(os.environ.get("BENCH_CELERY_SECONDS", "5"))
QUEUE = "bench_celery"


def make_app(confirm):
    app = Celery("bench", broker=AMQP_URL)
    app.conf.task_default_queue = QUEUE
    app.conf.broker_connection_retry_on_startup = True
    if confirm:
        app.conf.broker_transport_options = {"confirm_publish": True}

    @app.task(name="bench.noop")
    def noop(msg):  # never executed: no worker runs
        return msg

    return app, noop


def publish(confirm, seconds, out=None):
    app, noop = make_app(confirm)
    # Warm-up: open the connection and declare the queue.
    for _ in range(50):
        noop.apply_async(args=("warm-up",))
    lat = []
    t_end = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        if t0 >= t_end:
            break
        noop.apply_async(args=("bench message",))
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    r = {"published": len(lat), "seconds": round(elapsed, 2),
         "per_s": round(len(lat) / elapsed, 1), **summary(lat)}
    if out is not None:
        out.put(r)
    return r


def purge():
    app, _ = make_app(False)
    with app.connection_for_write() as conn:
        n = conn.default_channel.queue_purge(QUEUE)
    return n


def main():
    res = {}
    res["default"] = publish(False, SECONDS)
    log(f"celery apply_async (default): {res['default']['per_s']:.0f}/s  "
        f"p50 {res['default']['p50_ms']:.3f} ms  p99 {res['default']['p99_ms']:.3f} ms")
    res["confirm_publish"] = publish(True, SECONDS)
    log(f"celery apply_async (confirm_publish): {res['confirm_publish']['per_s']:.0f}/s  "
        f"p50 {res['confirm_publish']['p50_ms']:.3f} ms  p99 {res['confirm_publish']['p99_ms']:.3f} ms")
    q = mp.Queue()
    procs = [mp.Process(target=publish, args=(False, SECONDS, q)) for _ in range(2)]
    for p in procs:
        p.start()
    parts = [q.get() for _ in procs]
    for p in procs:
        p.join()
    res["default_x2"] = {"processes": 2, "per_s": round(sum(p["per_s"] for p in parts), 1),
                         "p50_ms": max(p["p50_ms"] for p in parts),
                         "p99_ms": max(p["p99_ms"] for p in parts)}
    log(f"celery apply_async (2 processes): {res['default_x2']['per_s']:.0f}/s")
    res["purged"] = purge()
    save("celery", res)


if __name__ == "__main__":
    main()
