"""Hostile-input benchmark: ``/v3/health`` latency while bad requests hit the server.

Issue 10, finding 2: every 500 logged a Rich traceback on the event loop (~2 s each), so ten bad
log-ins pushed the health check from 4 ms to seconds. This runs the server as an operator does
(``ragkeep serve`` in a subprocess, its own embedded PostgreSQL in a fresh RAGKEEP_HOME, the CLI's
logging), then per repeat, interleaved:

* ``idle``: health checks, one every 20 ms, for ``--seconds``;
* ``hostile``: the same while a separate process sends 10 requests a second of the hostile
  inputs of findings 2 and 3 (``tests/support/hostile.py``: NUL log-ins and registrations,
  offset 2^63, NaN/Infinity metadata, 50,000-deep nesting, hybrid weights 0, dash runs, bad JSON),
  each on a new connection, as a script would.

It prints p50/p99 of each phase, the hostile/idle p99 ratio per repeat and its median (target
<= 2x), and the status codes the hostile requests got. Bounded: ~``repeats * 2 * seconds`` plus
start-up (~1-2 min at the defaults).

    .venv/bin/python bench/hostile.py [--repeats 3] [--seconds 10] [--rate 10]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.hostile import hostile_requests, sender, upload_ready

ADMIN_EMAIL = "admin@hostile.bench"
ADMIN_PASSWORD = "admin-password-for-the-bench"
HEALTH_EVERY = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RAGKEEP_HOME": str(home),
        "RAGKEEP_PORT": str(port),
        "RAGKEEP_ADMIN_EMAIL": ADMIN_EMAIL,
        "RAGKEEP_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    exe = Path(sys.executable).with_name("ragkeep")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ragkeep serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v3/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise TimeoutError("ragkeep serve did not start in 300 s")


def _hostile_process(base_url: str, token: str, doc_id: str, rate: float, only: str | None,
                     stop: multiprocessing.Event, codes: multiprocessing.Queue) -> None:
    """Child: hostile requests at ``rate`` per second (one thread each, so a slow answer does not
    lower the rate) until ``stop``; puts a Counter of status codes on ``codes``."""
    send = sender(base_url, token)
    plan = [h for h in hostile_requests(doc_id) if not only or only in h.name]
    seen: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        h = plan[i % len(plan)]
        try:
            code = str(send(h).status_code)
        except httpx.HTTPError as e:
            code = type(e).__name__
        with lock:
            seen[code] += 1

    threads = []
    start = time.perf_counter()
    i = 0
    while not stop.is_set():
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        i += 1
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
    for t in threads:
        t.join(timeout=60)
    codes.put(dict(seen))


def health_phase(base_url: str, seconds: float) -> list[float]:
    """Milliseconds of each health check, one every HEALTH_EVERY s, on one keep-alive connection."""
    out = []
    with httpx.Client(base_url=base_url, timeout=120) as c:
        c.get("/v3/health")
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            r = c.get("/v3/health")
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
            time.sleep(max(0.0, HEALTH_EVERY - (time.perf_counter() - t0)))
    return out


def p99(ms: list[float]) -> float:
    return statistics.quantiles(ms, n=100)[98] if len(ms) >= 2 else ms[0]


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rate", type=float, default=10.0, help="hostile requests per second")
    ap.add_argument("--only", help="only the hostile inputs whose name contains this (to find a culprit)")
    args = ap.parse_args()
    started = time.perf_counter()
    print(f"load average at start {os.getloadavg()[0]:.1f} (2 cores: a busy machine inflates every figure)")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "server.log"
        proc = start_server(Path(tmp) / "home", port, log)
        base_url = f"http://127.0.0.1:{port}"
        try:
            run(ctx, base_url, args)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            errors = log.read_text(errors="replace").count("unhandled error")
            print(f"server log: {errors} unhandled errors logged")
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


def run(ctx: multiprocessing.context.BaseContext, base_url: str, args: argparse.Namespace) -> None:
    email = f"hostile-{os.getpid()}@hostile.bench"
    httpx.post(f"{base_url}/v3/users", json={"email": email, "password": "bench-password-1"}).raise_for_status()
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": "bench-password-1"})
    token = r.raise_for_status().json()["results"]["access_token"]["token"]
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        doc_id = upload_ready(c, "The hostile benchmark's document: chunks for the hybrid search to fuse.")
    print(f"{'repeat':>6} {'idle p50':>9} {'idle p99':>9} {'hostile p50':>12} {'hostile p99':>12} {'ratio p99':>10}")
    ratios, codes = [], collections.Counter()
    for rep in range(args.repeats):
        idle = health_phase(base_url, args.seconds)
        stop, queue = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_hostile_process, args=(base_url, token, doc_id, args.rate, args.only, stop, queue))
        child.start()
        time.sleep(0.5)  # the child's imports
        hostile = health_phase(base_url, args.seconds)
        stop.set()
        codes.update(queue.get(timeout=120))
        child.join(timeout=60)
        ratio = p99(hostile) / p99(idle)
        ratios.append(ratio)
        print(f"{rep + 1:>6} {statistics.median(idle):>7.1f}ms {p99(idle):>7.1f}ms "
              f"{statistics.median(hostile):>10.1f}ms {p99(hostile):>10.1f}ms {ratio:>9.1f}x")
    print(f"\nhealth p99 under {args.rate:g} hostile requests/s vs idle: median ratio {statistics.median(ratios):.2f}x "
          f"over {args.repeats} repeats (target <= 2x)")
    print("hostile responses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))


if __name__ == "__main__":
    main()
