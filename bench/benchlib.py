"""Shared helpers of the benchmark scripts in bench/ (imported, not run).

- `Abaco`: starts one `abaco` process (serve / api / spawner) with `{section}_{option}`
  environment overrides, waits until its API answers, reads its RSS, stops it with SIGTERM.
- `Api`: a tiny blocking JSON client over one keep-alive connection (http.client).
- `BollardDocker`: the raw bollard baseline, i.e. the `raw_docker_loop` example of
  lib/runtime (the platform's Docker client with no platform around it), driven over a pipe.
- `Docker`: raw Docker Engine API calls over the unix socket (http.client), a second baseline.
- `summary()`: p50/p90/p99/mean of a list of seconds, in milliseconds.
- `save()`: writes one benchmark's result to bench/out/<name>.json for bench/summary.py.

Everything here talks only to 127.0.0.1 and /var/run/docker.sock.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = Path(os.environ.get("BENCH_OUT", BENCH_DIR / "out"))
_TARGET = Path(os.environ.get("CARGO_TARGET_DIR", BENCH_DIR.parent / "target"))
ABACO_BIN = os.environ.get("ABACO_BIN", str(_TARGET / "release" / "abaco"))
# `cargo build --release -p abaco-runtime --example raw_docker_loop` (run.sh builds and snapshots it)
RAW_DOCKER_LOOP_BIN = os.environ.get(
    "RAW_DOCKER_LOOP_BIN", str(_TARGET / "release" / "examples" / "raw_docker_loop")
)
TMP_DIR = Path(os.environ.get("BENCH_TMP", "/tmp/abaco-bench"))

# Distributed backends, isolated from the test suite's (own Redis db, PostgreSQL database and
# RabbitMQ vhost; run.sh creates them).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgres://abaco:abaco@127.0.0.1:5432/abaco_bench"
)
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/abaco_bench")

# Settings every benchmark instance shares: its own command queue, no autoscaler, quiet logs.
BASE_ENV = {
    "spawner_host_queues": "bench",
    "workers_autoscaling": "false",
    "logs_level": "warn",
}


def log(*args):
    print("   ", *args, flush=True)


# ---------------------------------------------------------------------------------------------
# statistics


def pct(values, q):
    """The q-quantile (0..1) of values, nearest-rank on the sorted list."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


def summary(seconds):
    """p50/p90/p99/mean/min/max in milliseconds of a list of durations in seconds."""
    ms = [v * 1000.0 for v in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 3),
        "p90_ms": round(pct(ms, 0.90), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def save(name, result):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# the platform


class Api:
    """Blocking JSON client over one keep-alive HTTP/1.1 connection to the API."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method, path, body=None, raw=None):
        """Returns (status, decoded JSON envelope or None)."""
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        elif raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
            headers["content-type"] = "text/plain"
        for attempt in range(2):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:
            doc = None
        return resp.status, doc

    def ok(self, method, path, body=None, raw=None):
        status, doc = self.call(method, path, body=body, raw=raw)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status}: {doc}")
        return doc["result"]

    def register(self, name, image="abaco-test/echo", **extra):
        body = {"image": image, "name": name}
        body.update(extra)
        return self.ok("POST", "/actors", body=body)["id"]

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Abaco:
    """One `abaco` process with environment overrides; `with Abaco(...) as a:` stops it."""

    def __init__(self, name, command="serve", port=None, env=None, distributed=False,
                 keep_data=False):
        self.name = name
        self.command = command
        self.port = port
        self.dir = TMP_DIR / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        # Drop any {section}_{option} the caller's shell may carry, then apply ours.
        for key in list(self.env):
            if key.split("_", 1)[0] in (
                "general", "store", "rabbit", "spawner", "docker", "workers", "web", "logs"
            ):
                del self.env[key]
        self.env.update(BASE_ENV)
        self.env["store_data_dir"] = str(self.dir / "data")
        if not distributed and not keep_data:
            # Every embedded instance starts from an empty store (unless asked to reuse one).
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        if port is not None:
            self.env["web_bind"] = f"127.0.0.1:{port}"
        if distributed:
            self.env.update(
                store_backend="distributed",
                store_redis_url=REDIS_URL,
                store_postgres_url=POSTGRES_URL,
                rabbit_uri=AMQP_URL,
            )
        self.env.update(env or {})
        self.proc = None

    def start(self):
        logf = open(self.dir / f"{self.command}.log", "ab")
        # The working directory holds no abaco.conf: only the environment configures it.
        self.proc = subprocess.Popen(
            [ABACO_BIN, self.command], cwd=self.dir, env=self.env, stdout=logf, stderr=logf
        )
        if self.port is not None:
            deadline = time.monotonic() + 60
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"abaco {self.command} exited with {self.proc.returncode}; see {logf.name}"
                    )
                try:
                    status, _ = Api(self.port).call("GET", "/actors")
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"abaco {self.command} did not answer on :{self.port}")
                time.sleep(0.05)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        """VmRSS of the process in kB, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def cpu_seconds(self):
        """utime + stime of the process, in seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------
# the Docker Engine API, raw (the baselines of the execution benchmark)


class BollardDocker:
    """The raw bollard loop: one `raw_docker_loop` process (lib/runtime/examples), one JSON
    command line per call on its stdin, one JSON answer line on its stdout. The times are taken
    inside the Rust process around the bollard calls, so the pipe is not in them."""

    def __init__(self, binary=None):
        self.binary = binary or RAW_DOCKER_LOOP_BIN
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(
                f"{self.binary} is missing: cargo build --release -p abaco-runtime "
                "--example raw_docker_loop (bench/run.sh does it)"
            )
        self.proc = subprocess.Popen(
            [self.binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def _ask(self, command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"raw_docker_loop exited with {self.proc.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"raw_docker_loop {command['cmd']}: {reply['error']}")
        return reply

    def run_once(self, image, env):
        """One execution (create, start, wait, logs, remove); the phase times in seconds, as
        `Docker.run_once` returns them."""
        return self._ask({"cmd": "run", "image": image, "env": env})

    def parallel(self, image, n, par, env):
        """n runs from `par` concurrent tokio tasks; (elapsed seconds, list of per-run seconds)."""
        reply = self._ask({"cmd": "parallel", "image": image, "n": n, "par": par, "env": env})
        return reply["elapsed"], reply["times"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()  # end of input: the loop exits
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


class Docker:
    """create / start / wait / logs / remove over one keep-alive unix-socket connection, from
    Python `http.client` (the `raw_python` baseline; the ratios use `BollardDocker`)."""

    def __init__(self, path="/var/run/docker.sock"):
        self.path = path
        self.conn = _UnixConnection(path)

    def call(self, method, path, body=None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"docker {method} {path} -> {resp.status}: {payload[:300]!r}")
        return payload

    def run_once(self, image, env, network="bridge"):
        """One execution as the platform does it; returns the phase times in seconds."""
        t0 = time.perf_counter()
        body = {
            "Image": image,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {"abaco.bench": "raw"},
            "HostConfig": {"NetworkMode": network, "Privileged": False},
        }
        cid = json.loads(self.call("POST", "/containers/create", body))["Id"]
        t1 = time.perf_counter()
        self.call("POST", f"/containers/{cid}/start")
        t2 = time.perf_counter()
        self.call("POST", f"/containers/{cid}/wait")
        t3 = time.perf_counter()
        self.call("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
        self.call("DELETE", f"/containers/{cid}?force=1")
        t4 = time.perf_counter()
        return {"create": t1 - t0, "start": t2 - t1, "wait": t3 - t2, "logs_rm": t4 - t3,
                "total": t4 - t0}

    def parallel(self, image, n, par, env):
        """n runs from `par` threads, one connection each; (elapsed seconds, per-run seconds)."""
        lock = threading.Lock()
        todo = [n]
        times = []

        def loop():
            d = Docker(self.path)
            while True:
                with lock:
                    if todo[0] == 0:
                        return
                    todo[0] -= 1
                times.append(d.run_once(image, env)["total"])

        threads = [threading.Thread(target=loop) for _ in range(par)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0, times

    def close(self):
        self.conn.close()
