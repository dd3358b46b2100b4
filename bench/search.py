"""Search benchmark: latency through the HTTP API versus the same SQL sent directly, >= 100,000 chunks.

What it builds (in a fresh embedded PostgreSQL, like bench/ingest.py):

* ``--users`` users (default 1,000) owning ``--chunks`` chunks (default 100,000) with a Zipf
  (s = 1) size distribution: the largest user holds ~13 % of all chunks, the median one ~30;
* chunk texts made of real text nobody here wrote: 1-3 random paragraphs (~500 characters on
  average) of the Python standard library's docstrings and ``pydoc_data.topics``, so full-text
  search meets real words;
* embeddings that are SYNTHETIC: 384-dim unit vectors clustered around 256 random centroids
  (one centroid per document), not the model's. Queries are embedded by the real model.
  An exact scan costs the same whatever the vectors are, so latency is representative;
  relevance is not measured here.

Loading is a binary COPY, then VACUUM ANALYZE; then the ragkeep server starts in-process.

What it measures, for semantic, full-text and hybrid search at limit 10, for a small, a medium
and a large user and for the superuser (12 classes), interleaving per query:

* ``SQL``: ``ragkeep.search.queries.build_search_sql`` with the parameters ``run_search`` sends,
  executed with a plain synchronous psycopg connection in autocommit (the database's own cost
  plus one round trip);
* ``run_search``: ragkeep's async DB layer (an AsyncConnectionPool checkout, the implicit
  transaction, dict rows), in the benchmark's own event loop;
* ``API``: POST /v3/retrieval/search from a persistent httpx client in a separate process (in the
  server's process it would fight the server thread for the GIL), with the query vector
  precomputed: the benchmark replaces ``services.embedder.embed_query`` on the live server by a
  dictionary look-up of vectors the same model computed beforehand, so API and SQL run the same
  statement with the same vector and the difference is HTTP, auth, pool, ORM and JSON;
* ``API+model``: the same request with the model embedding the query (end-to-end latency);
  ``embed`` is the model's time alone (``embedder.embed_sync`` on one text).

Then, for a small user, where a search request's wall time goes (timing wrappers put around the
live server's steps for the duration, no profiler), and with ``--profile`` a cProfile of the
server's event-loop thread in thread CPU time (inflated by the profiler: read it for shares).

Target: API overhead <= 1.3x raw SQL at limit 10, i.e. API / SQL <= 1.3.

    .venv/bin/python bench/search.py [--chunks 100000] [--users 1000] [--repeats 200] [--profile]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import cProfile
import io
import math
import multiprocessing
import os
import pstats
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkeep.db.database import connect_sync, prepare_schema, start_embedded  # noqa: E402
from ragkeep.ingest.store import RECOUNT_OWNER_STATS_SQL, recount_params  # noqa: E402
from ragkeep.search.filters import compile_filters  # noqa: E402
from ragkeep.search.planner import Planner  # noqa: E402
from ragkeep.search.queries import Kind, Strategy, build_search_sql  # noqa: E402
from ragkeep.search.scope import Scope  # noqa: E402
from ragkeep.search.service import HybridParams, run_search  # noqa: E402
from tests.support import ADMIN_EMAIL, ServerThread, make_settings  # noqa: E402

DIM = 384
LIMIT = 10
CENTROIDS = 256
KIND_SETTINGS = {
    Kind.SEMANTIC: {},
    Kind.FULL_TEXT: {"use_fulltext_search": True, "use_semantic_search": False},
    Kind.HYBRID: {"use_hybrid_search": True},
}
QUERIES = [
    "read a file line by line", "convert a string to bytes with an encoding", "thread lock synchronization",
    "parse command line arguments", "regular expression match groups", "socket connection timeout",
    "serialize objects with pickle", "sort a list with a key function", "format dates and times",
    "temporary directory cleanup", "HTTP request headers", "compress data", "iterate over dictionary items",
    "exception traceback", "decimal precision", "subprocess output pipe", "abstract base class",
    "unicode normalization", "email message parsing", "XML element tree", "logging handler formatter",
    "random number generator seed", "join path components", "context manager with statement",
    "generator expression", "coroutine event loop", "import a module from a package", "class inheritance",
    "hash table mapping keys", "pack binary data", "default argument values", "environment variables",
    "floating point rounding", "queue of tasks", "signal handler", "weak references", "copy a list",
    "character set encoding errors", "calendar month", "compare two sequences",
]


# -- the data ---------------------------------------------------------------------------------


def paragraphs() -> list[str]:
    """Paragraphs of the standard library's docstrings (read with ``ast``, nothing imported) and of
    the reference topics in ``pydoc_data.topics``, as bench/ingest.py gathers its corpus."""
    import pydoc_data.topics

    texts = list(pydoc_data.topics.topics.values())
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        texts += [
            ast.get_docstring(node) or ""
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ]
    paras = {p.strip() for t in texts for p in t.split("\n\n") if 80 < len(p.strip()) < 1200}
    return sorted(paras)


def user_sizes(users: int, chunks: int) -> list[int]:
    """Zipf (s = 1) shares of ``chunks``, largest first, at least one chunk each."""
    weights = 1 / np.arange(1, users + 1)
    sizes = np.maximum(1, np.floor(chunks * weights / weights.sum())).astype(int)
    sizes[0] += chunks - sizes.sum()  # the rounding remainder goes to the largest user
    return [int(s) for s in sizes]


def load(url: str, sizes: list[int], paras: list[str], seed: int = 7) -> list[uuid.UUID]:
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((CENTROIDS, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    noise = 0.9 / math.sqrt(DIM)  # noise norm ~0.9 next to a unit centroid: loose clusters
    users = [uuid.uuid4() for _ in sizes]
    t0 = time.perf_counter()
    with connect_sync(url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY users (id, email, hashed_password) FROM STDIN") as copy:
                for u in users:
                    copy.write_row((u, f"bench-{u.hex[:12]}@ragkeep.bench", "not-a-password-hash"))
            docs: list[tuple[uuid.UUID, uuid.UUID, int]] = []  # owner, id, chunks
            for u, size in zip(users, sizes, strict=True):
                left = size
                while left > 0:
                    n = min(left, int(rng.integers(5, 40)))
                    docs.append((u, uuid.uuid4(), n))
                    left -= n
            with cur.copy(
                "COPY documents (owner_id, id, document_type, title, metadata, content_hash, ingestion_status, "
                "chunk_count) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "uuid", "text", "text", "jsonb", "text", "text", "int4"])
                for i, (owner, doc, n) in enumerate(docs):
                    copy.write_row((owner, doc, "txt", f"doc {i}", Jsonb({"n": i % 100, "kind": "bench"}),
                                    doc.hex, "success", n))
            with cur.copy(
                "COPY chunks (owner_id, id, document_id, chunk_order, text, metadata, embedding) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "uuid", "uuid", "int4", "text", "jsonb", "vector"])
                for owner, doc, n in docs:
                    centre = centroids[rng.integers(CENTROIDS)]
                    vecs = centre + rng.standard_normal((n, DIM)).astype(np.float32) * noise
                    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                    picks = rng.integers(len(paras), size=(n, 3))
                    widths = rng.integers(1, 4, size=n)  # paragraphs per chunk
                    for k in range(n):
                        text = "\n\n".join(paras[j] for j in picks[k][: widths[k]])[:1500]
                        copy.write_row((owner, uuid.uuid4(), doc, k, text, Jsonb({"kind": "bench"}), vecs[k]))
        # COPY goes past ingest/store.py, which keeps owner_stats: count them from the rows.
        conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params(users))
        conn.commit()
        print(f"loaded {len(users)} users, {len(docs)} documents, {sum(sizes)} chunks by binary COPY "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        t1 = time.perf_counter()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        print(f"VACUUM ANALYZE in {time.perf_counter() - t1:.0f} s", flush=True)
    return users


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Series:
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def p95(self) -> float:
        return float(np.percentile(self.times, 95)) * 1000


def sql_params(kind: Kind, scope: Scope, vector: np.ndarray, text: str) -> tuple[Any, dict[str, Any]]:
    """What ``run_search`` executes for (kind, scope, no filters, limit 10) with no vector index
    (this benchmark builds none, so the planner's choice is the exact scan)."""
    query, params = build_search_sql(kind, scope, compile_filters({}), Strategy.EXACT)
    params.update(limit=LIMIT, offset=0)
    if kind is not Kind.FULL_TEXT:
        params["q"] = vector
    if kind is not Kind.SEMANTIC:
        params["text"] = text
    if kind is Kind.HYBRID:
        h = HybridParams()
        params.update(semantic_limit=LIMIT, full_text_limit=h.full_text_limit, rrf_k=h.rrf_k,
                      semantic_weight=float(h.semantic_weight), full_text_weight=float(h.full_text_weight))
    return query, params


def client_process(pipe, base_url: str) -> None:  # type: ignore[no-untyped-def]
    """The HTTP client, in its own process: in the server's process it would compete with the
    server thread for the GIL, and each hand-over can wait a whole switch interval (5 ms)."""
    with httpx.Client(base_url=base_url, timeout=120) as http:
        while True:
            msg = pipe.recv()
            if msg is None:
                return
            method, path, body, headers = msg
            t = time.perf_counter()
            r = http.request(method, path, json=body, headers=headers)
            dt = time.perf_counter() - t
            hits = -1
            if r.status_code == 200 and path == "/v3/retrieval/search":
                hits = len(r.json()["results"]["chunk_search_results"])
            pipe.send((dt, r.status_code, hits, r.text[:300] if r.status_code != 200 else ""))


class RemoteClient:
    def __init__(self, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=client_process, args=(child, base_url), daemon=True)
        self.proc.start()

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[float, int]:
        """Seconds the request took, timed in the client process, and the number of hits."""
        self.pipe.send((method, path, body, headers or {}))
        dt, status, hits, text = self.pipe.recv()
        if status != 200:
            raise RuntimeError(f"{method} {path} failed: {status} {text}")
        return dt, hits

    def close(self) -> None:
        self.pipe.send(None)
        self.proc.join(timeout=30)


class Bench:
    def __init__(self, server: ServerThread, url: str, vectors: dict[str, np.ndarray]) -> None:
        self.server = server
        self.url = url
        self.vectors = vectors
        self.http = RemoteClient(server.base_url)
        self.raw = connect_sync(url)
        self.raw.autocommit = True
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(self._open_pool())
        self.planner = Planner()  # what remembers the index directory and counts, as Services.planner

    async def _open_pool(self):  # type: ignore[no-untyped-def]
        from pgvector.psycopg import register_vector_async
        from psycopg_pool import AsyncConnectionPool

        async def configure(conn: psycopg.AsyncConnection) -> None:
            await register_vector_async(conn)
            await conn.commit()

        pool = AsyncConnectionPool(self.url, min_size=1, max_size=2, configure=configure, open=False)
        await pool.open(wait=True)
        return pool

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()
        self.raw.close()
        self.http.close()

    # one call of each path; each returns (seconds, rows)

    def api(self, token: str, kind: Kind, query: str) -> tuple[float, int]:
        body = {"query": query, "search_settings": {"limit": LIMIT, **KIND_SETTINGS[kind]}}
        return self.http.request("POST", "/v3/retrieval/search", body, {"Authorization": f"Bearer {token}"})

    def sql(self, scope: Scope, kind: Kind, query: str) -> tuple[float, int]:
        stmt, params = sql_params(kind, scope, self.vectors[query], query)
        t = time.perf_counter()
        with self.raw.cursor(row_factory=dict_row) as cur:
            cur.execute(stmt, params)
            rows = cur.fetchall()
        return time.perf_counter() - t, len(rows)

    def run_search(self, scope: Scope, kind: Kind, query: str) -> tuple[float, int]:
        async def go() -> tuple[float, int]:
            t = time.perf_counter()
            async with self.pool.connection() as conn:
                outcome = await run_search(conn, kind, scope, compile_filters({}), limit=LIMIT, query_text=query,
                                           query_vector=self.vectors[query], hybrid=HybridParams(),
                                           planner=self.planner)
            return time.perf_counter() - t, len(outcome.rows)

        return self.loop.run_until_complete(go())


def measure(paths: dict[str, Callable[[str], tuple[float, int]]], repeats: int, budget: float, warmup: int = 10
            ) -> tuple[dict[str, Series], float]:
    """Interleave the paths query by query; stop early when the class's time budget is spent."""
    for i in range(warmup):
        for f in paths.values():
            f(QUERIES[i % len(QUERIES)])
    out = {name: Series([]) for name in paths}
    hits: list[int] = []
    start = time.perf_counter()
    for i in range(repeats):
        q = QUERIES[i % len(QUERIES)]
        names = list(paths)
        if i % 2:
            names.reverse()  # alternate the order so neither path always runs on a warmer cache
        for name in names:
            dt, n = paths[name](q)
            out[name].times.append(dt)
            if name == "SQL":
                hits.append(n)
        if i >= 30 and time.perf_counter() - start > budget:
            break
    return out, statistics.mean(hits) if hits else 0.0


def fixed_costs(bench: Bench, services, token: str, n: int = 200) -> dict[str, Series]:  # type: ignore[no-untyped-def]
    """Pieces of a request's cost, each timed alone (the DB ones over the benchmark's own pool)."""
    from starlette.concurrency import run_in_threadpool

    from ragkeep.auth.users import load_principal

    def timed(f: Callable[[], Any]) -> Series:
        for _ in range(10):
            f()
        s = Series([])
        for _ in range(n):
            t = time.perf_counter()
            f()
            s.times.append(time.perf_counter() - t)
        return s

    def timed_async(f: Callable[[], Any]) -> Series:
        async def go() -> Series:
            for _ in range(10):
                await f()
            s = Series([])
            for _ in range(n):
                t = time.perf_counter()
                await f()
                s.times.append(time.perf_counter() - t)
            return s

        return bench.loop.run_until_complete(go())

    def remote(path: str, headers: dict | None = None) -> Series:
        for _ in range(10):
            bench.http.request("GET", path, None, headers)
        return Series([bench.http.request("GET", path, None, headers)[0] for _ in range(n)])

    subject, _ = services.tokens.decode(token, "access")

    async def auth_query() -> None:
        async with bench.pool.connection() as conn:
            await load_principal(conn, subject)

    async def hop() -> None:
        await run_in_threadpool(lambda: None)

    auth = {"Authorization": f"Bearer {token}"}
    return {
        "GET /v3/health (HTTP + pool + SELECT 1, no auth)": remote("/v3/health"),
        "GET /v3/users/me (HTTP + auth + user row)": remote("/v3/users/me", auth),
        "JWT decode (services.tokens.decode)": timed(lambda: services.tokens.decode(token, "access")),
        "auth query: checkout + load_principal + COMMIT": timed_async(auth_query),
        "thread-pool hop (a sync FastAPI dependency)": timed_async(hop),
        "raw SELECT 1 (psycopg round trip)": timed(lambda: bench.raw.execute("SELECT 1").fetchall()),
        "embed one query (model, embed_sync)": _embed_series(services.embedder),
    }


def _embed_series(embedder, n: int = 100) -> Series:  # type: ignore[no-untyped-def]
    for q in QUERIES[:5]:
        embedder.embed_sync([q])
    s = Series([])
    for i in range(n):
        t = time.perf_counter()
        embedder.embed_sync([QUERIES[i % len(QUERIES)]])
        s.times.append(time.perf_counter() - t)
    return s


def breakdown(server: ServerThread, bench: Bench, token: str, kind: Kind, n: int = 200) -> list[tuple[str, Series]]:
    """Wall time per step of a search request on the live server, without a profiler.

    Bench-side only: timing wrappers go around module globals and live objects that the request
    path looks up at call time (FastAPI's ``solve_dependencies``/``serialize_response``,
    ragkeep's ``load_principal`` and ``run_search``, the token issuer, the pool, the ASGI
    middleware stack) and are removed afterwards. Medians per step do not add up exactly.
    """
    import contextlib

    import fastapi.routing as fastapi_routing

    import ragkeep.api.deps as deps
    import ragkeep.search.chunk_search as chunk_search

    times: dict[str, list[float]] = {}

    def record(name: str, t0: float) -> None:
        times.setdefault(name, []).append(time.perf_counter() - t0)

    def wrap_async(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await f(*a, **k)
            finally:
                record(name, t0)

        return wrapper

    services = server.services
    app = server.app
    pool = services.db.pool
    originals = [
        (fastapi_routing, "solve_dependencies"), (fastapi_routing, "serialize_response"),
        (deps, "load_principal"), (chunk_search, "run_search"),
    ]
    saved = {(m, a): getattr(m, a) for m, a in originals}
    decode, connection, stack = services.tokens.decode, pool.connection, app.middleware_stack
    getconn, putconn = pool.getconn, pool.putconn

    def timed_decode(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return decode(*a, **k)
        finally:
            record("JWT decode", t0)

    @contextlib.asynccontextmanager
    async def timed_connection(*a: Any, **k: Any):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        async with contextlib.AsyncExitStack() as es:
            conn = await es.enter_async_context(connection(*a, **k))
            record("pool checkout", t0)
            yield conn
            t1 = time.perf_counter()
            await es.aclose()  # COMMIT, then the connection goes back
            record("pool return (COMMIT)", t1)

    # A request's shared connection (db/shared.py) is checked out with getconn and given back
    # with putconn; each of its blocks commits at its end, inside the block's time.
    async def timed_getconn(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await getconn(*a, **k)
        finally:
            record("pool checkout", t0)

    async def timed_putconn(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await putconn(*a, **k)
        finally:
            record("pool return", t0)

    labels = {
        "solve_dependencies": "FastAPI dependencies (body, auth incl. DB, services)",
        "serialize_response": "FastAPI response_model validation + encoding",
        "load_principal": "auth query (load_principal)",
        "run_search": "search query (run_search)",
    }
    try:
        for m, a in originals:
            setattr(m, a, wrap_async(labels[a], saved[(m, a)]))
        services.tokens.decode = timed_decode  # type: ignore[method-assign]
        pool.connection = timed_connection  # type: ignore[method-assign]
        pool.getconn, pool.putconn = timed_getconn, timed_putconn  # type: ignore[method-assign]
        app.middleware_stack = wrap_async("ASGI app, whole request", stack)  # type: ignore[assignment]
        client = []
        for i in range(n + 20):
            if i == 20:
                times.clear()  # warm-up done
            dt, _ = bench.api(token, kind, QUERIES[i % len(QUERIES)])
            if i >= 20:
                client.append(dt)
    finally:
        for (m, a), f in saved.items():
            setattr(m, a, f)
        services.tokens.decode = decode  # type: ignore[method-assign]
        pool.connection = connection  # type: ignore[method-assign]
        pool.getconn, pool.putconn = getconn, putconn  # type: ignore[method-assign]
        app.middleware_stack = stack  # type: ignore[assignment]
    order = ["ASGI app, whole request", labels["solve_dependencies"], "JWT decode", labels["load_principal"],
             labels["run_search"], "pool checkout", "pool return", "pool return (COMMIT)", labels["serialize_response"]]
    out = [("client round trip (HTTP)", Series(client))]
    out += [(name, Series(times[name])) for name in order if name in times]
    return out


#: (label, file suffix, function) of the server-side steps the profile summary reports.
PROFILE_STEPS = [
    ("ASGI app, whole request", "fastapi/applications.py", "__call__"),
    ("  dependencies (body, auth, services)", "fastapi/dependencies/utils.py", "solve_dependencies"),
    ("    auth: optional_principal", "ragkeep/api/deps.py", "optional_principal"),
    ("      JWT decode", "ragkeep/auth/tokens.py", "decode"),
    ("      load_principal", "ragkeep/auth/users.py", "load_principal"),
    ("    body -> SearchRequest", "fastapi/dependencies/utils.py", "request_body_to_args"),
    ("    sync dependency thread hop", "starlette/concurrency.py", "run_in_threadpool"),
    ("  endpoint: search_chunks", "ragkeep/search/chunk_search.py", "search_chunks"),
    ("    compile_filters", "ragkeep/search/filters.py", "compile_filters"),
    ("    run_search", "ragkeep/search/service.py", "run_search"),
    ("      build_search_sql", "ragkeep/search/queries.py", "build_search_sql"),
    ("    result_fields (rows -> fields)", "ragkeep/search/settings.py", "result_fields"),
    ("  serialize_response (response_model)", "fastapi/routing.py", "serialize_response"),
    ("  psycopg commit (connection back to pool)", "psycopg/connection_async.py", "commit"),
    ("uvicorn: parse request", "uvicorn/protocols/http/h11_impl.py", "handle_events"),
    ("uvicorn: send response", "uvicorn/protocols/http/h11_impl.py", "send"),
]


def server_loop(server: ServerThread) -> asyncio.AbstractEventLoop:
    return server.server.servers[0].get_loop()  # uvicorn's listening socket knows its loop


def profile_server(server: ServerThread, call: Callable[[], Any], n: int) -> str:
    """cProfile the server's event-loop thread, where routing, auth, SQL driving and JSON run.

    The timer is the thread's CPU time (``time.thread_time``), so a loaded machine that
    deschedules the thread does not inflate the figures, and waits for PostgreSQL count nothing.
    For a coroutine cProfile counts each resumption as a call, so ``ncalls`` is not requests.
    """
    prof = cProfile.Profile(time.thread_time)
    loop = server_loop(server)

    async def on() -> None:
        prof.enable()

    async def off() -> None:
        prof.disable()

    asyncio.run_coroutine_threadsafe(on(), loop).result()
    t = time.perf_counter()
    for _ in range(n):
        call()
    wall = time.perf_counter() - t
    asyncio.run_coroutine_threadsafe(off(), loop).result()
    stats = pstats.Stats(prof)
    entries = stats.stats  # type: ignore[attr-defined]
    cpu = sum(tt for (_, _, _), (_, _, tt, _, _) in entries.items())
    lines = [f"{n} requests, {wall * 1000 / n:.2f} ms each from the client (profiling slows them); "
             f"CPU time of the server's loop thread per request: {cpu * 1000 / n:.2f} ms"]
    for label, suffix, func in PROFILE_STEPS:
        ct = max((ct for (f, _, name), (_, _, _, ct, _) in entries.items() if f.endswith(suffix) and name == func),
                 default=0.0)
        lines.append(f"  {label:<44} {ct * 1000 / n:6.3f} ms")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    top = [ln for ln in buf.getvalue().splitlines() if ln.strip()][-16:]
    return "\n".join([*lines, "top functions by own time (all requests):", *top])


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=200, help="queries per class and path (fewer if over budget)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per class before stopping early")
    ap.add_argument("--profile", action="store_true", help="also cProfile the server for two classes")
    args = ap.parse_args()

    t0 = time.perf_counter()
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs")
    paras = paragraphs()
    sizes = user_sizes(args.users, args.chunks)
    print(f"corpus: {len(paras)} distinct paragraphs of stdlib docstrings and pydoc topics; "
          f"{args.chunks} chunks of 1-3 paragraphs each over {args.users} users (Zipf)")
    print(f"embeddings: SYNTHETIC {DIM}-dim unit vectors clustered around {CENTROIDS} centroids "
          "(queries are embedded by the real model)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url, pg = start_embedded(make_settings(home / "pg", None))
        try:
            # No query cache: the API+model column repeats query texts and must time the model.
            settings = make_settings(home, url, embedding={"query_cache_size": 0})
            prepare_schema(url, DIM, settings.embedding.model)
            users = load(url, sizes, paras)
            server = ServerThread(settings).start()
            try:
                run(server, url, users, sizes, args)
            finally:
                server.stop()
        finally:
            pg.stop()  # type: ignore[attr-defined]
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; load average at the end: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def run(server: ServerThread, url: str, users: list[uuid.UUID], sizes: list[int], args: argparse.Namespace) -> None:
    services = server.services
    embedder = services.embedder
    vectors = {q: embedder.embed_sync([q])[0] for q in QUERIES}

    # Bench-side only: the live server's embed_query answers precomputed vectors for these exact
    # texts; a query with a trailing space is not in the table and goes to the model (the
    # tokenizer drops the space: same vector, same SQL).
    original = embedder.embed_query

    async def precomputed(text: str, cache_key: object = None) -> np.ndarray:
        vec = vectors.get(text)
        return vec if vec is not None else await original(text, cache_key)

    embedder.embed_query = precomputed  # type: ignore[method-assign]

    with psycopg.connect(url) as conn:
        admin_id = conn.execute("SELECT id FROM users WHERE lower(email) = lower(%s)", (ADMIN_EMAIL,)).fetchone()[0]
    pick = {"small": len(sizes) * 9 // 10, "medium": min(range(1, len(sizes)), key=lambda i: abs(sizes[i] - 1000)),
            "large": 0}
    callers = {f"{name} user ({sizes[i]} chunks)": (users[i], Scope(owner_id=users[i])) for name, i in pick.items()}
    callers[f"superuser ({sum(sizes)} chunks)"] = (admin_id, Scope(owner_id=None))

    bench = Bench(server, url, vectors)
    try:
        token0 = services.tokens.issue(users[pick["small"]], "access")
        fixed = fixed_costs(bench, services, token0)
        results = []
        for who, (uid, scope) in callers.items():
            token = services.tokens.issue(uid, "access")
            for kind in Kind:
                paths: dict[str, Callable[[str], tuple[float, int]]] = {
                    "SQL": lambda q, s=scope, k=kind: bench.sql(s, k, q),
                    "run_search": lambda q, s=scope, k=kind: bench.run_search(s, k, q),
                    "API": lambda q, t=token, k=kind: bench.api(t, k, q),
                }
                if kind is not Kind.FULL_TEXT:
                    paths["API+model"] = lambda q, t=token, k=kind: bench.api(t, k, q + " ")
                series, hits = measure(paths, args.repeats, args.budget)
                results.append((who, kind, series, hits))
                s = series
                print(f"  {who:<32} {kind.value:<9} n={len(s['SQL'].times):<4} SQL {s['SQL'].median:7.2f} ms  "
                      f"API {s['API'].median:7.2f} ms  ratio {s['API'].median / s['SQL'].median:5.2f}", flush=True)
        report(results, fixed)
        small_uid = callers[next(iter(callers))][0]
        small_token = services.tokens.issue(small_uid, "access")
        for kind in (Kind.SEMANTIC, Kind.FULL_TEXT):
            print(f"\nWhere a small user's {kind.value} search spends its time (wall, median / p95 ms, "
                  "precomputed vector; n = how many in 200 requests: pool checkouts per request = n / 200):")
            for name, series in breakdown(server, bench, small_token, kind):
                print(f"  {name:<56} {series.median:6.2f} / {series.p95:6.2f}  (n={len(series.times)})")
        if args.profile:
            token = small_token
            for kind in (Kind.SEMANTIC, Kind.FULL_TEXT):
                print(f"\n== cProfile of the server's loop thread: small user, {kind.value}, precomputed vector ==")
                print(profile_server(server, lambda k=kind: bench.api(token, k, QUERIES[3]), 300))
    finally:
        bench.close()
        embedder.embed_query = original  # type: ignore[method-assign]


def report(results: list, fixed: dict[str, Series]) -> None:  # type: ignore[type-arg]
    print()
    print("Search latency at limit 10, milliseconds (median / p95); ratio = API median / SQL median")
    head = (f"| {'class':<34} | {'kind':<9} | {'n':>4} | {'hits':>4} | {'SQL':>15} | {'run_search':>15} | "
            f"{'API':>15} | {'API/SQL':>7} | {'API+model':>15} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    worst = 0.0
    for who, kind, s, hits in results:
        ratio = s["API"].median / s["SQL"].median
        worst = max(worst, ratio)
        model = f"{s['API+model'].median:6.2f} / {s['API+model'].p95:6.2f}" if "API+model" in s else "-"
        print(f"| {who:<34} | {kind.value:<9} | {len(s['SQL'].times):>4} | {hits:>4.1f} | "
              f"{s['SQL'].median:6.2f} / {s['SQL'].p95:6.2f} | "
              f"{s['run_search'].median:6.2f} / {s['run_search'].p95:6.2f} | "
              f"{s['API'].median:6.2f} / {s['API'].p95:6.2f} | {ratio:7.2f} | {model:>15} |")
    print()
    print("Fixed costs, milliseconds (median / p95):")
    for name, s in fixed.items():
        print(f"  {name:<52} {s.median:6.2f} / {s.p95:6.2f}")
    print()
    print("target: API overhead <= 1.3x raw SQL at limit 10")
    ok = [r for r in results if r[2]["API"].median / r[2]["SQL"].median <= 1.3]
    print(f"result: {len(ok)} of {len(results)} classes meet it; worst ratio {worst:.2f}")


if __name__ == "__main__":
    main()
