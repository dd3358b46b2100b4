"""Cluster benchmark: search throughput and latency through HAProxy with 1, 2 and 3 ragkeep
replicas, with reads on the primary and on a streaming standby; and how stale the standby is.

The deployment is ``tests/support/cluster.py``'s, from real processes on 127.0.0.1: a primary
(``ragkeep db start``), a hot standby (``ragkeep db replica``), three ``ragkeep serve`` processes
reading on the standby (``read_urls``), HAProxy with ``deploy/haproxy.cfg``.

- **Data**: ``--users`` users upload ``--docs`` documents each through HAProxy (synchronous raw
  text uploads: the server embeds them), paragraphs of the standard library's docstrings.
- **Load**: ``--clients`` client threads in this process, each with its own keep-alive
  connection, send ``POST /v3/retrieval/search`` (semantic, limit 10) as fast as answers come
  back, as the users in turn, for ``--seconds`` per measurement. Queries are two random words of
  the corpus, so the query-embedding cache rarely helps: every search embeds its query.
- **Configurations**: the replicas HAProxy sends to (the others set to ``maint`` on its admin
  socket: their processes keep running and idle), reads on the standby, or on the primary (the
  standby stopped with ``ragkeep db stop``: the replicas' read router sends every read to the
  primary). Rounds interleave every configuration; each figure is the median over ``--rounds``.
- **Staleness**: a row inserted on the primary, polled on the standby until visible: the
  replication delay a reader of another user's data can see, idle and under search load.

On this 2-core machine, replicas and PostgreSQL share two cores with the load generator: the
figures are CPU-bound and say what a replica costs, not what N cores give (docs/scaling.md).

    .venv/bin/python bench/cluster.py [--users 8] [--docs 12] [--clients 8] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.search import paragraphs  # noqa: E402

from tests.support.cluster import Cluster, cluster  # noqa: E402


@dataclass
class Outcome:
    """One measurement: latencies of the searches answered 200, and the others."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def login(base_url: str, email: str, password: str) -> str:
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": password}, timeout=60)
    r.raise_for_status()
    return str(r.json()["results"]["access_token"]["token"])


def load_data(c: Cluster, users: int, docs: int) -> list[str]:
    """``users`` users with ``docs`` documents each, through HAProxy; their access tokens."""
    texts = [t for t in paragraphs() if 300 < len(t) < 3000]
    rng = random.Random(7)
    tokens = []
    for u in range(users):
        email, password = f"bench{u}-{rng.randrange(10**9)}@ragkeep.test", "bench-password-1"
        httpx.post(f"{c.base_url}/v3/users", json={"email": email, "password": password}, timeout=60).raise_for_status()
        token = login(c.base_url, email, password)
        with httpx.Client(base_url=c.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            for _ in range(docs):
                text = "\n\n".join(rng.sample(texts, 3))
                client.post("/v3/documents", data={"raw_text": text}).raise_for_status()
        tokens.append(token)
        print(f"  user {u + 1}/{users}: {docs} documents", flush=True)
    return tokens


def measure(base_url: str, tokens: list[str], words: list[str], clients: int, seconds: float) -> Outcome:
    """``clients`` threads searching for ``seconds`` (after a one-second warm-up)."""
    out = Outcome(seconds)
    lock = threading.Lock()
    start = time.monotonic() + 1.0
    stop = start + seconds

    def worker(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=base_url, timeout=30) as http:
            i = n
            while (now := time.monotonic()) < stop:
                token = tokens[i % len(tokens)]
                i += 1
                query = f"{rng.choice(words)} {rng.choice(words)}"
                t0 = time.perf_counter()
                try:
                    r = http.post("/v3/retrieval/search", json={"query": query, "search_settings": {"limit": 10}},
                                  headers={"Authorization": f"Bearer {token}"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                if now < start:
                    continue
                with lock:
                    if ok:
                        out.latencies.append(dt)
                    else:
                        out.errors += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def use_replicas(c: Cluster, n: int) -> None:
    """HAProxy sends to r1..rn; the others are in maintenance (idle, still running)."""
    for r in c.replicas:
        state = "ready" if r.index < n else "maint"
        c.haproxy(f"set server ragkeep/{r.name} state {state}")
    want = {r.name for r in c.replicas if r.index < n}
    deadline = time.monotonic() + 30
    while {k for k, v in c.haproxy_states().items() if v == "UP"} != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy did not settle on {sorted(want)}: {c.haproxy_states()}")
        time.sleep(0.1)


def reads_on(c: Cluster, standby: bool) -> None:
    """Reads on the standby (running, in rotation on every replica) or on the primary (the standby
    stopped: every replica's router sends its reads to the primary)."""
    if standby == all(c.standby_in_rotation(r.index) for r in c.replicas):
        return
    if standby:
        c.start_standby()
    else:
        c.stop_standby()
    deadline = time.monotonic() + 60
    while any(c.standby_in_rotation(r.index) != standby for r in c.replicas):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby did not {'join' if standby else 'leave'} rotation on every replica")
        time.sleep(0.1)


def staleness(c: Cluster, samples: int) -> list[float]:
    """Seconds from a committed insert on the primary to the row being visible on the standby."""
    assert c.standby_url is not None
    delays = []
    with psycopg.connect(c.primary_url, autocommit=True) as p, psycopg.connect(c.standby_url, autocommit=True) as s:
        p.execute("CREATE TABLE IF NOT EXISTS bench_staleness (n int PRIMARY KEY)")
        base = int(p.execute("SELECT coalesce(max(n), 0) FROM bench_staleness").fetchone()[0])  # type: ignore[index]
        for i in range(base + 1, base + 1 + samples):
            p.execute("INSERT INTO bench_staleness VALUES (%s)", (i,))
            t0 = time.perf_counter()
            while not s.execute("SELECT 1 FROM bench_staleness WHERE n = %s", (i,)).fetchone():
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("a row took over 30 s to reach the standby")
                time.sleep(0.0005)
            delays.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return delays


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--docs", type=int, default=12, help="documents per user")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every configuration (medians)")
    args = ap.parse_args()
    print(f"load average at start (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs", flush=True)
    started = time.monotonic()
    words = sorted({w.lower() for t in paragraphs()[:3000] for w in t.split() if w.isalpha() and len(w) > 4})
    with tempfile.TemporaryDirectory(prefix="rk-bench-cluster-") as tmp, cluster(Path(tmp), replicas=3) as c:
        print(f"cluster ready in {time.monotonic() - started:.0f} s; loading data", flush=True)
        tokens = load_data(c, args.users, args.docs)
        c.wait_replayed()
        idle = staleness(c, 50)
        configs = [(n, standby) for standby in (True, False) for n in (1, 2, 3)]
        results: dict[tuple[int, bool], list[Outcome]] = {k: [] for k in configs}
        loaded_staleness: list[float] = []
        for rnd in range(args.rounds):
            for standby in (True, False):
                reads_on(c, standby)
                for n in (1, 2, 3):
                    use_replicas(c, n)
                    o = measure(c.base_url, tokens, words, args.clients, args.seconds)
                    results[(n, standby)].append(o)
                    where = "standby" if standby else "primary"
                    print(f"  round {rnd + 1}: {n} replica(s), reads on the {where}: {o.rate:6.1f} searches/s, "
                          f"p50 {o.pct(0.5):6.1f} ms, p99 {o.pct(0.99):6.1f} ms, errors {o.errors}", flush=True)
            reads_on(c, True)
            use_replicas(c, 3)
            sampler = threading.Thread(target=lambda: loaded_staleness.extend(staleness(c, 20)))
            sampler.start()
            measure(c.base_url, tokens, words, args.clients, 3.0)
            sampler.join()

        base = statistics.median(o.rate for o in results[(1, False)])
        print("\nSearches through HAProxy (semantic, limit 10, query embedded by the server), "
              f"{args.clients} client threads, medians of {args.rounds} rounds of {args.seconds:g} s:")
        print("| replicas | reads on | searches/s | p50 ms | p99 ms | errors | throughput vs 1 replica, primary |")
        print("|---------:|----------|-----------:|-------:|-------:|-------:|------:|")
        for n, standby in configs:
            runs = results[(n, standby)]
            rate = statistics.median(o.rate for o in runs)
            p50 = statistics.median(o.pct(0.5) for o in runs)
            p99 = statistics.median(o.pct(0.99) for o in runs)
            errors = sum(o.errors for o in runs)
            print(f"| {n} | {'standby' if standby else 'primary'} | {rate:.1f} | {p50:.1f} | {p99:.1f} | "
                  f"{errors} | {rate / base:.2f} |")
        print("\nReplication delay, primary commit -> visible on the standby (ms):")
        print(f"  idle:               p50 {ms(idle, 0.5):.2f}, p99 {ms(idle, 0.99):.2f}, max {max(idle) * 1000:.2f} "
              f"(n={len(idle)})")
        if loaded_staleness:
            print(f"  under search load:  p50 {ms(loaded_staleness, 0.5):.2f}, p99 {ms(loaded_staleness, 0.99):.2f}, "
                  f"max {max(loaded_staleness) * 1000:.2f} (n={len(loaded_staleness)})")
    print(f"\ntotal run time {time.monotonic() - started:.0f} s; load average at the end: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
