"""Soak benchmark: 20 clients of mixed search and upload against a real ``ragkeep serve`` for
``--minutes`` (default 10, at most 60), reporting errors, p50/p99 per kind and memory over time.

Question: under sustained concurrent load, are there errors, and does the server's memory level
off (allocator arenas, model arenas, caches filling up) or keep growing? Target: 0 errors and a
plateau (RSS over the second half rising by less than 2 MB/min, see ``PLATEAU_MB_PER_MIN``).

The server is the product as an operator runs it: a subprocess ``ragkeep serve`` with a fresh
``RAGKEEP_HOME`` (its own embedded PostgreSQL), the real model, default settings except the log
level and the per-user request rate (raised so that the rate limiter, which is not under test,
never answers 429). ``--env NAME=VALUE`` passes more to the server (``MALLOC_ARENA_MAX=2``,
``RAGKEEP_EMBEDDING__QUERY_CACHE_SIZE=0``, ...) for comparisons.

The clients are threads in this process (the server is another process, so they do not share
its GIL), one keep-alive connection each, spread over ``--users`` users. Each picks, per request:
an upload (``--upload-share``, a real text cut to 400-``--max-chars`` characters with a unique
first line, as a file or as raw_text, with metadata), else a semantic, full-text, hybrid or
filtered (semantic + metadata filter) search for a query of 2-5 words from the corpus, a third
of them from a small fixed pool (query-cache hits). Corpus: Python's reference topics, Debian's
``/usr/share/doc/*/copyright`` files and standard-library docstrings (as bench/ingest.py).

Every ``--interval`` seconds it prints requests done, errors by status, p50/p99 per kind over
that interval, the server's RSS and thread count, and the PostgreSQL processes' total PSS (RSS
would count the shared buffers once per backend). At the end: totals, p50/p99 per kind for the
whole run, the first minute against the last (the baseline ratio), and memory: idle after start,
peak, end, and the least-squares slope over the second half, with the verdict. ``--smaps`` adds
where the server's resident memory sits (glibc heap and arenas, other anonymous mappings,
files); ``--probe`` runs the server under a wrapper that also records tracemalloc (Python heap)
and glibc's mallinfo2 (bytes in use versus free-but-kept), to tell the Python heap from native
memory. ``--probe`` slows the server: read its latencies as diagnostics only.

    .venv/bin/python bench/soak.py                           # 10 minutes, 20 clients
    .venv/bin/python bench/soak.py --minutes 3               # a shorter run
    .venv/bin/python bench/soak.py --minutes 3 --smaps --env MALLOC_ARENA_MAX=2
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import python_docstrings

MAX_MINUTES = 60
#: Below this slope over the second half the memory counts as level (a plateau).
PLATEAU_MB_PER_MIN = 2.0
ADMIN_EMAIL = "admin@soak.test"
ADMIN_PASSWORD = "soak-admin-password"
KINDS = ("semantic", "full-text", "hybrid", "filtered", "upload")
SEARCH_SETTINGS = {
    "semantic": {"use_semantic_search": True, "use_fulltext_search": False},
    "full-text": {"use_semantic_search": False, "use_fulltext_search": True},
    "hybrid": {"use_semantic_search": True, "use_fulltext_search": True, "use_hybrid_search": True},
    "filtered": {"use_semantic_search": True, "filters": {"metadata.source": {"$eq": "pydoc"}}},
}

#: Runs the server with tracemalloc and glibc statistics written to a JSON-lines file (--probe).
PROBE = r"""
import ctypes, json, os, sys, threading, time, tracemalloc
out, every = os.environ["SOAK_PROBE_FILE"], float(os.environ["SOAK_PROBE_SECONDS"])
tracemalloc.start(1)

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                 "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def probe():
    first = None
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        first = first or snap
        m = libc.mallinfo2()
        growth = [(str(s.traceback), s.size_diff, s.count_diff) for s in snap.compare_to(first, "lineno")[:12]]
        top = [(str(s.traceback), s.size, s.count) for s in snap.statistics("lineno")[:12]]
        row = {"t": time.time(), "traced": tracemalloc.get_traced_memory()[0],
               "malloc_in_use": m.uordblks, "malloc_free": m.fordblks, "malloc_mmapped": m.hblkhd,
               "malloc_arena": m.arena, "top": top, "growth": growth}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")

threading.Thread(target=probe, daemon=True, name="soak-probe").start()
from ragkeep.cli.main import app
sys.argv = ["ragkeep", "serve"]
app()
"""


# -- corpus ----------------------------------------------------------------------------------


def corpus(limit: int = 600) -> list[tuple[str, str]]:
    """(source, text) pairs of real text: pydoc topics, licences, docstrings."""
    import pydoc_data.topics

    docs = [("pydoc", text) for _, text in sorted(pydoc_data.topics.topics.items())]
    docs.extend(
        ("copyright", Path(path).read_text(encoding="utf-8", errors="replace"))
        for path in sorted(glob.glob("/usr/share/doc/*/copyright"))[:200]
    )
    docs += [("docstrings", text) for _, text in python_docstrings(limit)]
    return [(s, t) for s, t in docs if len(t) > 400]


def vocabulary(docs: list[tuple[str, str]]) -> list[str]:
    words = Counter(w.lower() for _, t in docs for w in re.findall(r"[A-Za-z]{4,}", t))
    return [w for w, n in words.most_common(4000) if n >= 3]


# -- recording -------------------------------------------------------------------------------


@dataclass
class Record:
    kind: str
    end: float  # seconds since the start of the load
    ms: float
    status: int  # 0: no answer (connection error, timeout)


@dataclass
class Sample:
    t: float
    server_rss: float  # MB
    server_threads: int
    pg_pss: float  # MB, PostgreSQL processes together
    pg_procs: int
    smaps: dict[str, float] = field(default_factory=dict)


class Log:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[Record] = []
        self.errors: list[str] = []

    def add(self, rec: Record, detail: str | None = None) -> None:
        with self.lock:
            self.records.append(rec)
            if detail is not None and len(self.errors) < 20:
                self.errors.append(detail)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, port: int, extra_env: dict[str, str], probe: Path | None, probe_seconds: float
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKEEP_")}
    env.update(
        RAGKEEP_HOME=str(home),
        RAGKEEP_PORT=str(port),
        RAGKEEP_ADMIN_EMAIL=ADMIN_EMAIL,
        RAGKEEP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        RAGKEEP_APP__LOG_LEVEL="warning",
        RAGKEEP_LIMITS__GLOBAL_PER_MIN="1000000",
    )
    env.update(extra_env)
    if probe is not None:
        env.update(SOAK_PROBE_FILE=str(probe), SOAK_PROBE_SECONDS=str(probe_seconds))
        cmd = [sys.executable, "-c", PROBE]
    else:
        ragkeep = shutil.which("ragkeep", path=str(Path(sys.executable).parent)) or "ragkeep"
        cmd = [ragkeep, "serve"]
    log = open(home.parent / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen[bytes], base_url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} during start-up")
        try:
            if httpx.get(f"{base_url}/v3/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the server did not answer /v3/health in time")


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        return [master, *master.children()]
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


def smaps_breakdown(pid: int) -> dict[str, float]:
    """Resident MB by kind of mapping: glibc's main heap, anonymous mappings (thread arenas,
    large mallocs, ONNX Runtime's arena, numpy), and file-backed (code, model file)."""
    out: dict[str, float] = defaultdict(float)
    kind = "file"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(maxsplit=6)
                if "-" in first[0] and len(first) >= 5 and not first[0].endswith(":"):
                    lo, hi = (int(x, 16) for x in first[0].split("-"))
                    name = first[5].strip() if len(first) > 5 else ""
                    if name == "[heap]":
                        kind = "heap"
                    elif name == "" and hi - lo >= 32 << 20:
                        kind = "anon>=32MB"  # glibc thread arenas reserve 64 MB; big arenas/mmaps
                    elif name == "":
                        kind = "anon<32MB"
                    elif name.startswith("["):
                        kind = "other"
                    else:
                        kind = "file"
                elif first[0] == "Rss:":
                    out[kind] += int(first[1]) / 1024
    except OSError:
        pass
    return dict(out)


def sample(server: psutil.Process, pgdata: Path, t: float, with_smaps: bool) -> Sample:
    pss, procs = 0.0, postgres_processes(pgdata)
    for p in procs:
        try:
            pss += p.memory_full_info().pss / 2**20
        except psutil.Error:
            pass
    return Sample(
        t,
        server.memory_info().rss / 2**20,
        server.num_threads(),
        pss,
        len(procs),
        smaps_breakdown(server.pid) if with_smaps else {},
    )


def stop_server(proc: subprocess.Popen[bytes], pgdata: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for p in postgres_processes(pgdata)[:1]:  # left behind if the server did not stop cleanly
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except psutil.Error:
            p.kill()


# -- clients ---------------------------------------------------------------------------------


def register(base_url: str, n: int) -> list[str]:
    tokens = []
    for i in range(n):
        email, password = f"soak-{i}-{uuid.uuid4().hex[:8]}@soak.test", uuid.uuid4().hex
        httpx.post(f"{base_url}/v3/users", json={"email": email, "password": password}, timeout=60).raise_for_status()
        r = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": password}, timeout=60)
        r.raise_for_status()
        tokens.append(r.json()["results"]["access_token"]["token"])
    return tokens


class Workload:
    def __init__(self, docs: list[tuple[str, str]], words: list[str], upload_share: float, max_chars: int) -> None:
        self.docs, self.words = docs, words
        self.upload_share, self.max_chars = upload_share, max_chars
        pool = random.Random(7)
        self.pool = [" ".join(pool.sample(words, pool.randint(2, 5))) for _ in range(200)]

    def query(self, rng: random.Random) -> str:
        if rng.random() < 1 / 3:
            return rng.choice(self.pool)
        return " ".join(rng.sample(self.words, rng.randint(2, 5)))

    def upload(self, client: httpx.Client, rng: random.Random, tag: str) -> httpx.Response:
        source, text = rng.choice(self.docs)
        start = rng.randrange(max(1, len(text) - 400))
        body = f"soak upload {tag} {uuid.uuid4()}\n\n" + text[start : start + rng.randint(400, self.max_chars)]
        meta = json.dumps({"source": source, "client": tag})
        if rng.random() < 0.5:
            files = {"file": (f"{tag}.txt", body.encode(), "text/plain")}
            return client.post("/v3/documents", files=files, data={"metadata": meta})
        return client.post("/v3/documents", data={"raw_text": body, "metadata": meta})

    def request(self, client: httpx.Client, rng: random.Random, tag: str) -> tuple[str, httpx.Response]:
        if rng.random() < self.upload_share:
            return "upload", self.upload(client, rng, tag)
        kind = rng.choice(("semantic", "full-text", "hybrid", "filtered"))
        body = {"query": self.query(rng), "search_settings": {**SEARCH_SETTINGS[kind], "limit": 10}}
        return kind, client.post("/v3/retrieval/search", json=body)


def client_loop(i: int, base_url: str, token: str, work: Workload, log: Log, t0: float, stop_at: float) -> None:
    rng = random.Random(1000 + i)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            kind, status, detail = "?", 0, None
            try:
                kind, r = work.request(client, rng, f"c{i}")
                status = r.status_code
                if status >= 300:
                    detail = f"{kind}: {status} {r.text[:200]}"
            except httpx.HTTPError as e:
                detail = f"{kind}: {type(e).__name__}: {e}"
            end = time.monotonic()
            log.add(Record(kind, end - t0, (end - start) * 1000, status), detail)


# -- report ----------------------------------------------------------------------------------


def errors_by_status(recs: list[Record]) -> str:
    bad = Counter(r.status for r in recs if not 200 <= r.status < 300)
    return ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(bad.items())) or "0"


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares MB per minute."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def print_interval(log: Log, samples: list[Sample], since: float, now: float, with_smaps: bool) -> None:
    with log.lock:
        recs = [r for r in log.records if since <= r.end < now]
        total = len(log.records)
    s = samples[-1]
    parts = []
    for kind in KINDS:
        ms = [r.ms for r in recs if r.kind == kind and 200 <= r.status < 300]
        if ms:
            parts.append(f"{kind} {statistics.median(ms):.0f}/{pct(ms, 0.99):.0f}")
    extra = ""
    if with_smaps and s.smaps:
        extra = " | " + " ".join(f"{k} {v:.0f}" for k, v in sorted(s.smaps.items()))
    print(
        f"{now:6.0f}s  req {len(recs):5d} ({total:6d})  err {errors_by_status(recs):>6}  "
        f"rss {s.server_rss:6.0f} MB  thr {s.server_threads:3d}  pg {s.pg_pss:5.0f} MB/{s.pg_procs:2d}  "
        f"p50/p99 ms: {', '.join(parts)}{extra}",
        flush=True,
    )


def summary(log: Log, samples: list[Sample], idle: Sample, seconds: float) -> None:
    recs = log.records
    print(f"\n{len(recs)} requests in {seconds:.0f} s ({len(recs) / seconds:.1f}/s); errors: {errors_by_status(recs)}")
    for line in log.errors[:10]:
        print(f"  {line}")
    first = [r for r in recs if r.end < 60]
    last = [r for r in recs if r.end >= seconds - 60]
    print(f"\n{'kind':<10} {'n':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'1st min p50':>12} {'last min p50':>13} {'last/1st':>9}")
    for kind in KINDS:
        ok = [r.ms for r in recs if r.kind == kind and 200 <= r.status < 300]
        a = [r.ms for r in first if r.kind == kind and 200 <= r.status < 300]
        b = [r.ms for r in last if r.kind == kind and 200 <= r.status < 300]
        if not ok:
            continue
        ratio = statistics.median(b) / statistics.median(a) if a and b else float("nan")
        print(
            f"{kind:<10} {len(ok):>7} {statistics.median(ok):>8.1f} {pct(ok, 0.99):>8.1f} "
            f"{statistics.median(a) if a else float('nan'):>12.1f} "
            f"{statistics.median(b) if b else float('nan'):>13.1f} {ratio:>9.2f}"
        )
    half = [s for s in samples if s.t >= seconds / 2]
    for name, get in (("server RSS", lambda s: s.server_rss), ("PostgreSQL PSS", lambda s: s.pg_pss)):
        peak = max(samples, key=get)
        k = slope([(s.t, get(s)) for s in half])
        verdict = "plateau" if k < PLATEAU_MB_PER_MIN else "GROWING"
        print(
            f"\n{name}: idle {get(idle):.0f} MB, "
            f"after 1 min {get(next(s for s in samples if s.t >= min(60, seconds))):.0f}, "
            f"peak {get(peak):.0f} at {peak.t:.0f} s, end {get(samples[-1]):.0f}; "
            f"second half slope {k:+.2f} MB/min -> {verdict} (threshold {PLATEAU_MB_PER_MIN} MB/min)"
        )
    print("(PostgreSQL's PSS counts the shared buffers its processes have touched: it follows the data the\n"
          " uploads add, up to database.embedded_shared_buffers; the server's RSS is the figure to judge)")
    if samples[-1].smaps:
        by_mapping = ", ".join(f"{k} {v:.0f}" for k, v in sorted(samples[-1].smaps.items()))
        print("server resident MB by mapping at the end: " + by_mapping)


def print_probe(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not rows:
        print("\nprobe: no rows recorded")
        return
    t0 = rows[0]["t"]
    print("\nprobe (server process): MB of tracemalloc's Python heap and of glibc malloc")
    print(f"{'s':>6} {'python':>8} {'malloc used':>12} {'malloc free':>12} {'mmapped':>8} {'main arena':>11}")
    for r in rows[:: max(1, len(rows) // 12)] + ([rows[-1]] if len(rows) > 1 else []):
        print(
            f"{r['t'] - t0:6.0f} {r['traced'] / 2**20:8.1f} {r['malloc_in_use'] / 2**20:12.1f} "
            f"{r['malloc_free'] / 2**20:12.1f} {r['malloc_mmapped'] / 2**20:8.1f} {r['malloc_arena'] / 2**20:11.1f}"
        )
    print("largest Python allocation sites at the end:")
    for where, size, count in rows[-1]["top"][:8]:
        print(f"  {size / 2**20:7.2f} MB {count:8d}  {where}")
    print("growth since the first probe:")
    for where, size, count in rows[-1]["growth"][:8]:
        print(f"  {size / 2**20:+7.2f} MB {count:+8d}  {where}")


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help=f"load duration (at most {MAX_MINUTES})")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--upload-share", type=float, default=0.1, help="share of requests that are uploads")
    ap.add_argument("--max-chars", type=int, default=4000, help="longest upload, in characters")
    ap.add_argument("--preload", type=int, default=20, help="documents per user before the load starts")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="more environment for the server")
    ap.add_argument("--smaps", action="store_true", help="where the server's resident memory sits")
    ap.add_argument("--probe", action="store_true", help="tracemalloc + mallinfo2 in the server (slows it)")
    args = ap.parse_args()
    if not 0 < args.minutes <= MAX_MINUTES:
        ap.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    extra_env = dict(e.split("=", 1) for e in args.env)
    docs = corpus()
    work = Workload(docs, vocabulary(docs), args.upload_share, args.max_chars)
    started = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f}; {len(docs)} texts, {len(work.words)} query words; "
          f"{args.clients} clients over {args.users} users, {args.upload_share:.0%} uploads, {args.minutes:g} min; "
          f"server env {extra_env or '-'}{'; PROBE ON (slower)' if args.probe else ''}")
    with tempfile.TemporaryDirectory(prefix="ragkeep-soak-") as tmp:
        home, port = Path(tmp) / "home", free_port()
        base_url, pgdata = f"http://127.0.0.1:{port}", home / "pgdata"
        probe = Path(tmp) / "probe.jsonl" if args.probe else None
        proc = start_server(home, port, extra_env, probe, args.sample * 6)
        try:
            wait_ready(proc, base_url)
            server = psutil.Process(proc.pid)
            idle = sample(server, pgdata, 0.0, args.smaps)
            print(f"server ready in {time.perf_counter() - started:.0f} s: idle RSS {idle.server_rss:.0f} MB, "
                  f"{idle.server_threads} threads; PostgreSQL {idle.pg_pss:.0f} MB PSS in {idle.pg_procs} processes")
            tokens = register(base_url, args.users)
            rng = random.Random(1)
            for u, token in enumerate(tokens):
                with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
                    for _ in range(args.preload):
                        work.upload(c, rng, f"pre{u}").raise_for_status()
            print(f"{args.users} users with {args.preload} documents each; load starts")
            run(args, base_url, tokens, work, server, pgdata, idle)
        finally:
            stop_server(proc, pgdata)
            if proc.returncode not in (0, None):
                server_log = (Path(tmp) / "server.log").read_text()[-3000:]
                print(f"server exited with {proc.returncode}; its log:\n" + server_log)
        if probe is not None:
            print_probe(probe)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


def run(
    args: argparse.Namespace, base_url: str, tokens: list[str], work: Workload,
    server: psutil.Process, pgdata: Path, idle: Sample,
) -> None:
    log, samples = Log(), []
    t0 = time.monotonic()
    stop_at = t0 + args.minutes * 60
    threads = [
        threading.Thread(
            target=client_loop, args=(i, base_url, tokens[i % len(tokens)], work, log, t0, stop_at), daemon=True
        )
        for i in range(args.clients)
    ]
    for t in threads:
        t.start()
    next_print = args.interval
    last_print = 0.0
    while time.monotonic() < stop_at:
        time.sleep(min(args.sample, max(0.0, stop_at - time.monotonic())))
        now = time.monotonic() - t0
        samples.append(sample(server, pgdata, now, args.smaps))
        if now >= next_print or time.monotonic() >= stop_at:
            print_interval(log, samples, last_print, now, args.smaps)
            last_print, next_print = now, now + args.interval
    for t in threads:
        t.join(timeout=90)  # every request has a 60 s timeout: the run is bounded
    summary(log, samples, idle, args.minutes * 60)


if __name__ == "__main__":
    main()
