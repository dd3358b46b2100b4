"""HNSW sizing on this machine: memory, build time, latency and recall at m = 16 and m = 32.

The question (issue 13, item 5): how much RAM and build time does a global HNSW index need per
vector, what does it buy over the exact scan, and how much ``shared_buffers`` keeps it warm? The
figures feed docs/scaling.md (vectors per GB of RAM, build hours per million, when to shard) and
the constants of ``ragkeep.indices.sizing`` that the index advice warns with.

The data: bench/filtered.py's generator and loader, imported (SYNTHETIC 384-dim unit vectors of
low intrinsic dimension, clustered like text embeddings, over Zipf-sized users; binary COPY;
VACUUM ANALYZE), in a fresh embedded PostgreSQL in a temporary folder with ``--shared-buffers``.
Queries are held-out vectors of the same clusters (never inserted), across all users, so recall
is that of a cross-user (superuser) search over all N vectors.

Then, in one run:

* the baseline: the exact scan (no index; ``ORDER BY embedding <=> q LIMIT 10`` over the warm
  table, PostgreSQL's own plan, parallel if it likes), latency p50/p99;
* for (m, ef_construction) in (16, 64), (32, 80): ``CREATE INDEX ... USING hnsw`` timed with
  ``max_parallel_maintenance_workers`` = cores - 1 and again with 0 (one core), with
  ``maintenance_work_mem`` = ragkeep's own plan for the build (``plan_build``: the graph estimate
  x 1.25, checked: any "graph no longer fits" notice is printed); the index's size
  (``pg_relation_size``), bytes per vector, and the shared_buffers it needs (its 8 kB blocks),
  checked after ``pg_prewarm`` with ``pg_buffercache`` (all of its blocks resident?); latency
  p50/p99 and recall@10 at ``hnsw.ef_search`` 40 and 100 (warm), recall against numpy brute force
  on the vectors read back from the table. Each index is dropped before the next is built.

Build times are extrapolated to other sizes assuming an HNSW build costs ~ n log n (each insert
searches a graph whose depth grows with log n), and to more cores assuming the parallel
efficiency measured here holds (optimistic beyond a few cores).

    .venv/bin/python bench/sizing.py                   # 100,000 vectors (~5 min on 2 cores)
    .venv/bin/python bench/sizing.py --vectors 20000   # quick check (~1 min)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.filtered import DIM, MODEL, Dataset, Generator, Progress, load, make_cases, read_users, settings_for  # noqa: E402

from ragkeep.config import IndicesConfig  # noqa: E402
from ragkeep.db.database import prepare_schema, start_embedded  # noqa: E402
from ragkeep.indices.memory import MIB, hnsw_bytes_per_element, plan_build  # noqa: E402

CONFIGS = ((16, 64), (32, 80))
EF_SEARCH = (40, 100)
LIMIT = 10
BLOCK = 8192
GIB = 1024**3
NAME = "sizing_hnsw"
QUERY = "SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 10"


@dataclass
class Latency:
    times: list[float] = field(default_factory=list)
    recall: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def p99(self) -> float:
        return float(np.percentile(self.times, 99)) * 1000


@dataclass
class Result:
    m: int
    ef_construction: int
    build_s: dict[int, float]  # workers -> seconds
    maintenance_work_mem_mb: int
    graph_bytes_per_vector: float  # in maintenance_work_mem while building (ragkeep's estimate)
    index_bytes: int
    index_blocks: int
    cached_blocks: int
    shared_buffers_blocks: int
    notices: list[str]
    search: dict[int, Latency]  # ef_search -> latency and recall


def nlogn(n: float) -> float:
    return n * math.log(n)


def extrapolate(seconds: float, n_from: int, n_to: int) -> float:
    """HNSW build cost ~ n log n: every insert searches a graph whose depth grows with log n."""
    return seconds * nlogn(n_to) / nlogn(n_from)


def read_vectors(conn: psycopg.Connection) -> tuple[list[object], np.ndarray]:
    ids, vecs = [], []
    with conn.cursor() as cur:
        cur.execute("SELECT id, embedding FROM chunks")
        for cid, vec in cur:
            ids.append(cid)
            vecs.append(vec.to_numpy() if hasattr(vec, "to_numpy") else vec)
    return ids, np.asarray(vecs, dtype=np.float32)


def ground_truth(data: np.ndarray, ids: list[object], queries: np.ndarray) -> list[set[object]]:
    """Top 10 by cosine distance (the vectors are unit: the largest dot products), in blocks."""
    out: list[set[object]] = []
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ data.T
        top = np.argpartition(-scores, LIMIT, axis=1)[:, :LIMIT]
        out += [{ids[j] for j in row} for row in top]
    return out


def run_queries(conn: psycopg.Connection, queries: np.ndarray, truth: list[set[object]], warmup: int = 10) -> Latency:
    for q in queries[:warmup]:
        conn.execute(QUERY, (q,)).fetchall()
    lat = Latency()
    hits = 0
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        rows = conn.execute(QUERY, (q,)).fetchall()
        lat.times.append(time.perf_counter() - t)
        hits += len({r[0] for r in rows} & want)
    lat.recall = hits / (LIMIT * len(queries))
    return lat


def plan_of(conn: psycopg.Connection, q: np.ndarray) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + QUERY, (q,)).fetchall())


def nodes(plan: str) -> str:
    """``Limit -> Gather Merge -> ...``: the plan's node names."""
    return " -> ".join(line.strip(" ->").split("  (")[0] for line in plan.splitlines() if "(cost=" in line)


def shared_buffers_blocks(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()
    return int(row[0])  # type: ignore[index]


def cached_blocks(conn: psycopg.Connection, relation: str) -> int:
    """Blocks of ``relation`` in shared buffers now (pg_buffercache)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_buffercache b WHERE b.relfilenode = pg_relation_filenode(%s::regclass) "
        "AND b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (relation,),
    ).fetchone()
    return int(row[0])  # type: ignore[index]


def build(conn: psycopg.Connection, m: int, efc: int, workers: int, mwm_mb: int, notices: list[str]) -> float:
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{mwm_mb}MB")))
    conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers)))
    def handler(d: psycopg.errors.Diagnostic) -> None:
        notices.append(f"{workers} workers: {d.message_primary}")

    conn.add_notice_handler(handler)
    t = time.perf_counter()
    conn.execute(sql.SQL(
        "CREATE INDEX {} ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})"
    ).format(sql.Identifier(NAME), sql.Literal(m), sql.Literal(efc)))
    took = time.perf_counter() - t
    conn.remove_notice_handler(handler)
    return took


def measure(conn: psycopg.Connection, n: int, m: int, efc: int, worker_counts: list[int], queries: np.ndarray,
            truth: list[set[object]]) -> Result:
    plan = plan_build("hnsw", {"m": m}, n, DIM, IndicesConfig(build_memory_cap_mb=1 << 20))
    notices: list[str] = []
    times: dict[int, float] = {}
    for i, w in enumerate(worker_counts):
        if i:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(NAME)))
        times[w] = build(conn, m, efc, w, plan.maintenance_work_mem_mb, notices)
        print(f"  m={m} ef_construction={efc}: built with {w} parallel workers in {times[w]:.1f} s", flush=True)
    size = int(conn.execute("SELECT pg_relation_size(%s::regclass)", (NAME,)).fetchone()[0])  # type: ignore[index]
    conn.execute("SELECT pg_prewarm(%s::regclass)", (NAME,))
    cached = cached_blocks(conn, NAME)
    plan_text = plan_of(conn, queries[0])
    if NAME not in plan_text:
        raise RuntimeError(f"the query does not use {NAME}:\n{plan_text}")
    search = {}
    for ef in EF_SEARCH:
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
        search[ef] = run_queries(conn, queries, truth)
        print(f"  ef_search={ef}: p50 {search[ef].p50:.2f} ms, recall@10 {search[ef].recall:.3f}", flush=True)
    conn.execute("RESET hnsw.ef_search")
    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(NAME)))
    return Result(m, efc, times, plan.maintenance_work_mem_mb, hnsw_bytes_per_element(DIM, m), size, size // BLOCK,
                  cached, shared_buffers_blocks(conn), notices, search)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=0, help="default: vectors / 500, at least 20")
    ap.add_argument("--queries", type=int, default=300, help="HNSW queries per ef_search")
    ap.add_argument("--exact-queries", type=int, default=40, help="queries for the exact-scan baseline")
    ap.add_argument("--shared-buffers", default="1GB", help="of the benchmark's PostgreSQL (must hold an index)")
    ap.add_argument("--workers", type=int, default=max(0, (os.cpu_count() or 1) - 1),
                    help="parallel maintenance workers of the parallel build (default cores - 1; 0: serial only)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    users = args.users or max(20, args.vectors // 500)
    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {cores} CPUs")
    ds = Dataset(args.vectors, users, 1.1, args.seed)
    gen = Generator(ds.seed)
    print(f"{ds.chunks:,} SYNTHETIC {DIM}-dim unit vectors ({MODEL}'s dimension) over {users} users, "
          f"bench/filtered.py's generator (clustered, intrinsic dim ~48); shared_buffers {args.shared_buffers}")
    worker_counts = sorted({args.workers, 0}, reverse=True)
    with tempfile.TemporaryDirectory(prefix="ragkeep-sizing-") as tmp:
        url, pg = start_embedded(settings_for(Path(tmp), args.shared_buffers))
        try:
            prepare_schema(url, DIM, MODEL)
            with Progress() as progress:
                load(url, ds, gen, progress, global_index=False)
            with psycopg.connect(url, autocommit=True) as conn:
                register_vector(conn)
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
                heap = int(conn.execute("SELECT pg_table_size('chunks')").fetchone()[0])  # type: ignore[index]
                t = time.perf_counter()
                ids, data = read_vectors(conn)
                cases = make_cases(gen, read_users(url, ds), None, args.queries, stream=1)
                queries = np.asarray([c.vector for c in cases], dtype=np.float32)
                truth = ground_truth(data, ids, queries)
                print(f"read {len(ids):,} vectors back and computed the exact top 10 of {len(queries)} queries "
                      f"with numpy in {time.perf_counter() - t:.1f} s", flush=True)
                conn.execute("SELECT pg_prewarm('chunks'::regclass)")
                toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class "
                                     "WHERE oid = 'chunks'::regclass AND reltoastrelid <> 0").fetchone()
                if toast:
                    conn.execute("SELECT pg_prewarm(%s::regclass)", (toast[0],))
                k = min(args.exact_queries, len(queries))
                exact = run_queries(conn, queries[:k], truth[:k], warmup=3)
                print(f"exact scan (no index; plan: {nodes(plan_of(conn, queries[0]))}): "
                      f"p50 {exact.p50:.1f} ms, recall@10 {exact.recall:.3f} (SQL against numpy)", flush=True)
                results = [measure(conn, len(ids), m, efc, worker_counts, queries, truth) for m, efc in CONFIGS]
        finally:
            pg.stop()  # type: ignore[attr-defined]
    report(results, exact, len(ids), heap, cores, worker_counts)
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; load average at the end: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def report(results: list[Result], exact: Latency, n: int, heap: int, cores: int, worker_counts: list[int]) -> None:
    par = max(worker_counts)
    print(f"\n## {n:,} vectors, 384 dimensions, cosine; exact scan p50 {exact.p50:.1f} ms, p99 {exact.p99:.1f} ms "
          f"({len(exact.times)} queries); table (heap + TOAST) {heap / MIB:.0f} MiB\n")
    head = ["m", "ef_c", f"build s ({par} workers)" if par else "", "build s (serial)", "maint. mem MB",
            "index MiB", "bytes/vector", "shared_buffers needed", "resident after prewarm"]
    head = [h for h in head if h]
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in results:
        row = [str(r.m), str(r.ef_construction)]
        if par:
            row.append(f"{r.build_s[par]:.1f} (x{r.build_s[0] / r.build_s[par]:.2f})")
        row += [f"{r.build_s[0]:.1f}", str(r.maintenance_work_mem_mb), f"{r.index_bytes / MIB:.1f}",
                f"{r.index_bytes / n:,.0f}", f"{r.index_blocks:,} blocks = {r.index_blocks * BLOCK / MIB:.0f} MiB",
                f"{r.cached_blocks:,}/{r.index_blocks:,} of {r.shared_buffers_blocks:,}"]
        print("| " + " | ".join(row) + " |")
    print("\n| m | ef_search | p50 ms | p99 ms | recall@10 | exact p50 / HNSW p50 |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| exact | - | {exact.p50:.2f} | {exact.p99:.2f} | {exact.recall:.3f} | 1 |")
    for r in results:
        for ef, lat in r.search.items():
            print(f"| {r.m} | {ef} | {lat.p50:.2f} | {lat.p99:.2f} | {lat.recall:.3f} | {exact.p50 / lat.p50:.0f}x |")
    for r in results:
        for note in r.notices:
            print(f"notice (m={r.m}): {note}")
    print("\n## Sizing figures (384 dimensions)\n")
    for r in results:
        per = r.index_bytes / n
        serial_100k = extrapolate(r.build_s[0], n, 100_000)
        serial_1m_h = extrapolate(r.build_s[0], n, 1_000_000) / 3600
        line = (f"m={r.m}, ef_construction={r.ef_construction}: index {per:,.0f} B/vector -> "
                f"{GIB / per / 1e6:.2f} M vectors per GiB of shared_buffers (index alone), "
                f"{GIB / (per + heap / n) / 1e6:.2f} M with the table; build graph "
                f"{r.graph_bytes_per_vector:,.0f} B/vector in maintenance_work_mem "
                f"({r.graph_bytes_per_vector * 1e6 / GIB:.2f} GiB per million); build {serial_100k:.0f} s per 100k "
                f"on 1 core, {serial_1m_h:.3g} h per million on 1 core")
        if par:
            eff = r.build_s[0] / r.build_s[par] / (par + 1)
            line += (f"; parallel efficiency {eff:.0%} on {par + 1} processes -> per million "
                     + ", ".join(f"{c} cores {serial_1m_h / (c * eff):.3g} h" for c in (cores, 8, 16, 32)))
        print("- " + line)
    print("\nAssumptions: build time ~ n log n (extrapolated from this run's n); more cores at the parallel "
          "efficiency measured here (pgvector's parallel build scales sublinearly: optimistic beyond a few cores); "
          "latency is one client on a warm index, cross-user (all vectors), limit 10, plain psycopg.")


if __name__ == "__main__":
    main()
