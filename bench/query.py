"""Query-embedding benchmark: what the model adds to a search, what the LRU cache saves, and
how long a search waits for the model while an upload is being embedded.

Interleaved per repeat, through the HTTP API from a separate client process, one user with a
few hundred chunks of the Python reference topics (real text), medians:

* ``full-text``: no embedding at all (the baseline);
* ``semantic, new query``: a query text not seen before: the model runs (cache miss);
* ``semantic, repeated``: the same text again: served from the query cache;
* ``semantic, new query, during upload``: a cache miss while another user's upload of a long
  document keeps the model thread busy; queries jump the queue, so this should cost about one
  batch more, not the whole upload.

    .venv/bin/python bench/query.py [--repeats 40]      # ~30 s
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkeep.db.database import start_embedded
from tests.quality.dataset import PYDOC_TEST_TOPICS, pydoc_documents
from tests.support import ServerThread, make_settings, register

WORDS = [
    "lock", "mutex", "queue", "timer", "interrupt", "memory", "page",
    "cache", "thread", "signal", "file", "socket", "buffer", "module",
]


def _timed(base_url: str, token: str, plan: list[tuple[str, str]]) -> list[float]:
    """Child process: milliseconds of each (kind, query) search, in order."""
    kinds = {
        "full-text": {"use_semantic_search": False, "use_fulltext_search": True},
        "semantic": {"use_semantic_search": True, "use_fulltext_search": False},
    }
    out = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        c.get("/v3/health")
        for kind, q in plan:
            t0 = time.perf_counter()
            r = c.post("/v3/retrieval/search", json={"query": q, "search_settings": {**kinds[kind], "limit": 10}})
            out.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    return out


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url, pg = start_embedded(make_settings(home / "pg", None))
        try:
            server = ServerThread(make_settings(home, url)).start()
            try:
                run(server, args.repeats)
            finally:
                server.stop()
        finally:
            pg.stop()  # type: ignore[attr-defined]
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


def run(server: ServerThread, repeats: int) -> None:
    user = register(server.base_url, "query")
    for doc in pydoc_documents(PYDOC_TEST_TOPICS[2:]):  # the short topics: ~60 chunks
        user.client.post("/v3/documents", data={"raw_text": doc.text}).raise_for_status()
    token = user.client.headers["Authorization"].split()[1]
    embedder = server.services.embedder
    print(f"load average {os.getloadavg()[0]:.1f}; batch_size {embedder.batch_size}; "
          f"query cache {embedder.query_cache_size}")

    def query(i: int, tag: str) -> str:
        return f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} {tag} {i}"

    plan = []
    for i in range(repeats):
        plan += [("full-text", query(i, "ft")), ("semantic", query(i, "new")), ("semantic", query(i, "new"))]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as client:
        times = client.apply(_timed, (server.base_url, token, plan))
        # A long upload by another user keeps the model busy while new queries arrive.
        other = register(server.base_url, "uploader")
        long_text = "\n\n".join(d.text for d in pydoc_documents(("types", "compound", "specialnames")))
        done = threading.Event()

        def upload() -> None:
            other.client.post("/v3/documents", data={"raw_text": long_text}, timeout=1200)
            done.set()

        uploader = threading.Thread(target=upload)
        uploader.start()
        time.sleep(2.0)  # parsed, chunked, its batches queued
        busy_plan = [("semantic", query(i, "busy")) for i in range(repeats)]
        busy = client.apply(_timed, (server.base_url, token, busy_plan))
        finished_first = done.is_set()
        uploader.join()

    full_text, miss, hit = times[0::3], times[1::3], times[2::3]
    base = statistics.median(full_text)
    rows = [
        ("full-text (no embedding)", full_text),
        ("semantic, new query (model)", miss),
        ("semantic, repeated (cache)", hit),
        ("semantic, new query, during upload", busy),
    ]
    print(f"\n{'request':<38} {'median ms':>10} {'p95 ms':>8} {'/ full-text':>12}")
    for name, t in rows:
        p95 = sorted(t)[int(0.95 * (len(t) - 1))]
        print(f"{name:<38} {statistics.median(t):>10.2f} {p95:>8.2f} {statistics.median(t) / base:>12.2f}")
    print(f"\nembedding a query adds {statistics.median(miss) - statistics.median(hit):.2f} ms (new minus repeated); "
          f"cache hits {embedder.query_cache_hits}, misses {embedder.query_cache_misses}")
    if finished_first:
        print("note: the upload finished before the busy queries did; the last row is partly idle")


if __name__ == "__main__":
    main()
