"""Citus benchmark: the same per-user search workload on a single node and on a local Citus cluster.

The question (issue 13): what does sharding by user cost a search that stays on one user, i.e.
the coordinator's distributed planning plus the router hop to the worker that holds the user's
shard? And what does a cross-user (superuser) search cost when it fans out over every shard?

The setup, fresh in a temporary folder, removed at the end:

* one single-node PostgreSQL (``ragkeep db start``'s standalone server, no Citus) and one Citus
  cluster (``ragkeep db start --citus-workers 2``'s: a coordinator and two workers), all servers
  of the same wheel bundle with the same ``shared_buffers``, all on 127.0.0.1 over TCP;
* the same data on both: bench/filtered.py's generator and loader, imported (SYNTHETIC,
  pre-computed 384-dim unit vectors, clustered, Zipf-sized users; real text from pydoc), into the
  ragkeep schema (``prepare_schema``); on the coordinator the database is then distributed by
  ``ragkeep.db.distribute.distribute`` (``--shards`` shards, Citus' metadata says where), then
  VACUUM ANALYZE and one HNSW index on chunks (m=16, ef_construction=64, cosine), built on both
  (on Citus: one per shard, by the workers);
* relations and indexes pre-warmed (pg_prewarm; on Citus every shard, on the workers).

The workload: ragkeep's ``run_search`` on a pooled async connection (as the server does), with one
``Planner`` per database (as ``Services.planner``), scoped to one owner (the scope ragkeep gives a
user: a single-shard router query on Citus) or to everything (a superuser). Classes: semantic for
small users (the planner picks the exact scan), semantic for large users (the HNSW index),
full-text, hybrid, and the superuser's semantic search over all users. Queries are interleaved
per query between the two databases (alternating which goes first), after an untimed warm-up
round; p50 / p99 per class and database and the ratio Citus / single node. Baselines: ``SELECT 1``
through the same pools (the coordinator answers it alone: no hop) and a point read of one owner's
``owner_stats`` row (a router query: on Citus one hop to a worker), the router hop's floor.
Then the EXPLAIN ANALYZE of one pinned search on Citus (``Task Count: 1``) and the superuser's
task count.

On a 2-core machine the coordinator, both workers and this client share the CPU: the figures are
the per-search overhead of the extra hop and of Citus' planner, not what workers on machines of
their own would give (no scale-out throughput is measured here).

    .venv/bin/python bench/citus.py                    # 50,000 vectors, 200 users (~65 s on 2 cores)
    .venv/bin/python bench/citus.py --vectors 10000    # ~35 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.filtered import (  # noqa: E402
    DIM,
    GLOBAL_PREFIX,
    MODEL,
    Dataset,
    Generator,
    Progress,
    build_index,
    load,
    prewarm,
    user_id,
    zipf_sizes,
)

from ragkeep.config import DatabaseConfig, SearchConfig  # noqa: E402
from ragkeep.db import citus  # noqa: E402
from ragkeep.db.database import pool_kwargs, prepare_schema  # noqa: E402
from ragkeep.db.distribute import check_vector_indexes, distribute, layout  # noqa: E402
from ragkeep.db.server import ServerInfo, start_server, stop_server  # noqa: E402
from ragkeep.search.filters import compile_filters  # noqa: E402
from ragkeep.search.planner import Planner  # noqa: E402
from ragkeep.search.queries import Kind  # noqa: E402
from ragkeep.search.scope import Scope  # noqa: E402
from ragkeep.search.service import HybridParams, run_search  # noqa: E402

LIMIT = 10
#: Full-text (and hybrid) query texts: words of the pydoc sentences the chunks are made of.
TEXTS = [
    "exception handler", "iterator protocol", "class attribute", "keyword argument", "module import",
    "string formatting", "integer division", "context manager", "generator expression", "comparison operators",
    "default value", "function call", "dictionary keys", "instance method", "name binding",
]
#: Run on every shard of chunks (Citus puts the shard's name for %s): its heap, TOAST and indexes.
PREWARM_SHARD = """SELECT sum(pg_prewarm(r)) FROM (SELECT '%s'::regclass AS t) s, LATERAL (
  SELECT t UNION ALL SELECT indexrelid::regclass FROM pg_index WHERE indrelid = t
  UNION ALL SELECT reltoastrelid::regclass FROM pg_class WHERE oid = t AND reltoastrelid <> 0) x(r)"""
PLACEMENTS_SQL = """SELECT p.nodename, p.nodeport, count(*) FROM pg_dist_shard_placement p
JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'chunks'::regclass GROUP BY 1, 2 ORDER BY 2"""
NOTE_CORES = ("On {cpus} cores the coordinator, both workers and this client share the CPU (the single "
              "node idles while Citus runs and the other way round): a Citus search's planning on the "
              "coordinator, its execution on a worker and the client take turns on the same cores. The "
              "figures are the per-search cost of the router hop and Citus' planner, not scale-out: no "
              "throughput is measured, and workers on machines of their own would not share a core.")


@dataclass(frozen=True)
class Query:
    owner: uuid.UUID | None
    vector: np.ndarray
    text: str


@dataclass
class Klass:
    name: str
    kind: Kind
    queries: list[Query]


@dataclass
class Side:
    """One database: its pool (as the server's) and its planner (as ``Services.planner``)."""

    name: str
    url: str
    pool: Any = None
    planner: Planner = field(default_factory=Planner)

    async def open(self) -> None:
        from pgvector.psycopg import register_vector_async
        from psycopg_pool import AsyncConnectionPool

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await register_vector_async(conn)
            await conn.commit()

        self.pool = AsyncConnectionPool(self.url, min_size=2, max_size=2, configure=configure, open=False,
                                        kwargs=pool_kwargs(self.url, DatabaseConfig()))
        await self.pool.open(wait=True)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def search(self, kind: Kind, q: Query, explain: bool = False) -> tuple[float, list[Any], str, Any]:
        t = time.perf_counter()
        async with self.pool.connection() as conn:
            outcome = await run_search(
                conn, kind, Scope(owner_id=q.owner), compile_filters({}), planner=self.planner, limit=LIMIT,
                query_text=q.text if kind is not Kind.SEMANTIC else None,
                query_vector=q.vector if kind is not Kind.FULL_TEXT else None,
                hybrid=HybridParams() if kind is Kind.HYBRID else None, explain=explain,
            )
            if explain:
                await conn.rollback()
        dt = time.perf_counter() - t
        strategy = str(getattr(outcome.plan.strategy, "value", outcome.plan.strategy))
        # Chunk ids are random per load (filtered.load): a row is known by its document and text.
        return dt, [(r["document_id"], r["text"]) for r in outcome.rows], strategy, outcome.explain

    async def timed(self, statement: str, params: tuple[Any, ...] = ()) -> float:
        t = time.perf_counter()
        async with self.pool.connection() as conn:
            await (await conn.execute(statement, params)).fetchall()
        return time.perf_counter() - t


# -- setting up -------------------------------------------------------------------------------


def setup(url: str, ds: Dataset, gen: Generator, progress: Progress, shards: int | None) -> None:
    """ragkeep's schema, the data, (on Citus) distribution, statistics and the HNSW index."""
    prepare_schema(url, DIM, MODEL)
    load(url, ds, gen, progress, global_index=False)  # users, documents, chunks by binary COPY; VACUUM ANALYZE
    with psycopg.connect(url, autocommit=True) as conn:
        if shards is not None:
            t = time.perf_counter()
            distribute(conn, shard_count=shards)
            for table in ("documents", "chunks", "owner_stats"):
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))  # the shards' statistics
            n_shards, workers = layout(conn)
            where = ", ".join(f"{host}:{port} {n}" for host, port, n in conn.execute(PLACEMENTS_SQL).fetchall())
            print(f"distributed in {time.perf_counter() - t:.0f} s: chunks in {n_shards} shards on {workers} "
                  f"workers (shards per worker: {where}); the coordinator holds none", flush=True)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        build_index(url, conn, sql.Identifier(GLOBAL_PREFIX + stamp), sql.SQL(""), ds.chunks, progress,
                    "HNSW (m=16, ef_construction=64, cosine)" + (" on every shard" if shards else ""))
        if shards is not None:
            for ix in check_vector_indexes(conn, repair=False):
                print(f"  {ix.name}: on {ix.present} of {ix.shards} shards", flush=True)


def prewarm_citus(url: str) -> None:
    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT success, result FROM run_command_on_shards('chunks', %s)",
                            (PREWARM_SHARD,)).fetchall()
    failed = [r[1] for r in rows if not r[0]]
    if failed:
        raise RuntimeError(f"pg_prewarm on a shard failed: {failed[0]}")
    pages = sum(int(r[1]) for r in rows)
    print(f"pg_prewarm: {len(rows)} shards of chunks with their indexes, {pages * 8 // 1024} MiB in "
          f"{time.perf_counter() - t:.0f} s", flush=True)


# -- the workload -----------------------------------------------------------------------------


def make_classes(ds: Dataset, gen: Generator, n: int) -> tuple[list[Klass], str]:
    """Small users (exact scan), large users (above the planner's threshold: HNSW), superuser."""
    sizes = zipf_sizes(ds.users, ds.chunks, ds.zipf)
    threshold = SearchConfig().exact_threshold
    small = sorted({ds.users // 4, ds.users // 2, (3 * ds.users) // 4})
    small = [i for i in small if sizes[i] <= threshold]
    large = [i for i in range(min(3, ds.users)) if sizes[i] > threshold]

    def queries(users: list[int], stream: int) -> list[Query]:
        per_user = {i: gen.queries(i, sizes[i], n, stream=stream) for i in users}
        return [Query(user_id(ds.seed, users[k % len(users)]), per_user[users[k % len(users)]][k],
                      TEXTS[k % len(TEXTS)]) for k in range(n)]

    rng = np.random.default_rng([ds.seed, 13])
    p = np.array(sizes, dtype=float) / sum(sizes)
    everyone = [Query(None, gen.queries(int(i), sizes[int(i)], 1, stream=100 + k)[0], TEXTS[k % len(TEXTS)])
                for k, i in enumerate(rng.choice(ds.users, n, p=p))]
    classes = [Klass("semantic, small user", Kind.SEMANTIC, queries(small, 11))]
    if large:
        classes.append(Klass("semantic, large user", Kind.SEMANTIC, queries(large, 12)))
    mixed = large or small
    classes += [
        Klass("full-text, " + ("large" if large else "small") + " user", Kind.FULL_TEXT, queries(mixed, 13)),
        Klass("hybrid, small user", Kind.HYBRID, queries(small, 14)),
    ]
    if large:
        classes.append(Klass("hybrid, large user", Kind.HYBRID, queries(large, 15)))
    classes.append(Klass("semantic, superuser (all users)", Kind.SEMANTIC, everyone))
    described = (f"small users: {[sizes[i] for i in small]} vectors (at most the planner's exact_threshold "
                 f"{threshold}); large users: {[sizes[i] for i in large] or 'none above the threshold'}")
    return classes, described


@dataclass
class Samples:
    single: list[float] = field(default_factory=list)
    citus: list[float] = field(default_factory=list)
    plans: dict[str, Counter[str]] = field(default_factory=lambda: {"single": Counter(), "citus": Counter()})
    same: int = 0
    compared: int = 0


async def measure_class(sides: tuple[Side, Side], klass: Klass, repeats: int, budget: float) -> Samples:
    out = Samples()
    t0 = time.perf_counter()
    for rnd in range(repeats):
        for j, q in enumerate(klass.queries):
            order = sides if (rnd + j) % 2 == 0 else sides[::-1]
            ids = {}
            for side in order:
                dt, found, strategy, _ = await side.search(klass.kind, q)
                getattr(out, side.name).append(dt)
                out.plans[side.name][strategy] += 1
                ids[side.name] = found
            if rnd == 0:
                out.compared += 1
                out.same += ids["single"] == ids["citus"]
        if time.perf_counter() - t0 > budget and rnd >= 1:
            break
    return out


async def measure_baseline(sides: tuple[Side, Side], statement: str, params: list[tuple[Any, ...]]) -> Samples:
    out = Samples()
    for j, p in enumerate(params):
        for side in sides if j % 2 == 0 else sides[::-1]:
            getattr(out, side.name).append(await side.timed(statement, p))
    return out


def fmt(x: float) -> str:
    return f"{x * 1000:.2f}"


def row(name: str, s: Samples, plan: str = "") -> str:
    a50, b50 = statistics.median(s.single), statistics.median(s.citus)
    a99, b99 = float(np.percentile(s.single, 99)), float(np.percentile(s.citus, 99))
    return (f"{name:<34} {plan:<22} {len(s.single):>5} {fmt(a50):>8} {fmt(a99):>8} {fmt(b50):>8} {fmt(b99):>8} "
            f"{b50 / a50:>6.2f}x {b99 / a99:>6.2f}x {fmt(b50 - a50):>8}")


def plan_lines(node: Any, depth: int = 0) -> list[str]:
    """EXPLAIN (FORMAT JSON) as indented lines, through Citus' Distributed Query into the workers'
    Remote Plans: node type, relation / index, actual time and rows, task counts."""
    pad = "  " * depth
    lines: list[str] = []
    if isinstance(node, str):
        try:
            node = json.loads(node)
        except ValueError:
            return [pad + node]
    if isinstance(node, list):
        for item in node:
            lines += plan_lines(item, depth)
        return lines
    if not isinstance(node, dict):
        return lines
    if "Plan" in node and "Node Type" not in node:
        return plan_lines(node["Plan"], depth)
    if "Node Type" in node:
        what = node["Node Type"] + (f" ({node['Custom Plan Provider']})" if "Custom Plan Provider" in node else "")
        for key, label in (("Index Name", "using"), ("Relation Name", "on"), ("CTE Name", "CTE")):
            if key in node:
                what += f" {label} {node[key]}"
        if "Actual Total Time" in node:
            what += f"  (actual {node['Actual Total Time']:.3f} ms, {node.get('Actual Rows')} rows)"
        lines.append(pad + "-> " + what)
    if "Distributed Query" in node:
        job = node["Distributed Query"].get("Job", {})
        lines.append(f"{pad}   Task Count: {job.get('Task Count')}, Tasks Shown: {job.get('Tasks Shown')}")
        for task in job.get("Tasks", []):
            lines.append(f"{pad}   Task on {task.get('Node', '?')}:")
            lines += plan_lines(task.get("Remote Plan"), depth + 2)
    for child in node.get("Plans", []):
        lines += plan_lines(child, depth + 1)
    return lines


def task_counts(node: Any) -> list[int]:
    found: list[int] = []

    def walk(n: Any) -> None:
        if isinstance(n, list):
            for x in n:
                walk(x)
        elif isinstance(n, dict):
            if "Task Count" in n:
                found.append(int(n["Task Count"]))
            for v in n.values():
                walk(v)

    walk(node)
    return found


async def measure(single_url: str, citus_url: str, ds: Dataset, gen: Generator, args: argparse.Namespace) -> None:
    sides = (Side("single", single_url), Side("citus", citus_url))
    for side in sides:
        await side.open()
    try:
        classes, described = make_classes(ds, gen, args.queries)
        print(described)
        print("warm-up: one untimed round of every class on both databases", flush=True)
        for klass in classes:
            for q in klass.queries:
                for side in sides:
                    await side.search(klass.kind, q)
        owners = [user_id(ds.seed, i % ds.users) for i in range(args.baseline)]
        baselines = [
            ("SELECT 1 (no table: no hop)", await measure_baseline(sides, "SELECT 1", [()] * args.baseline)),
            ("owner_stats row of one owner", await measure_baseline(
                sides, "SELECT chunk_count FROM owner_stats WHERE owner_id = %s", [(o,) for o in owners])),
        ]
        results = []
        for klass in classes:
            t = time.perf_counter()
            results.append((klass, await measure_class(sides, klass, args.repeats, args.budget)))
            print(f"  {klass.name}: {len(results[-1][1].single)} searches per database in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)

        print(f"\nLatency in ms, per search through the pool (checkout, transaction, commit), {args.queries} "
              f"queries x up to {args.repeats} rounds, interleaved; ratio = Citus / single node; "
              f"delta = Citus p50 - single p50")
        print(f"{'class':<34} {'plan (single / Citus)':<22} {'n':>5} {'1n p50':>8} {'1n p99':>8} "
              f"{'Ci p50':>8} {'Ci p99':>8} {'p50 x':>7} {'p99 x':>7} {'delta':>8}")
        for name, s in baselines:
            print(row(name, s, "single / router" if "owner" in name else "coordinator only"))
        for klass, s in results:
            plans = " / ".join(",".join(sorted(s.plans[k])) for k in ("single", "citus"))
            print(row(klass.name, s, plans))
        print("\nsame top 10 (documents and texts, in order) on both, first round: " + "; ".join(
            f"{k.name} {s.same}/{s.compared}" for k, s in results)
              + "\n  (semantic exact scans must agree; HNSW graphs differ between one index and one per shard; equal "
              "full-text ranks are ordered by chunk id, random per load, so full-text and hybrid lists differ on ties)")

        pinned = next((k for k in results if k[0].name == "semantic, large user"), results[0])[0]
        _, _, strategy, plans = await sides[1].search(pinned.kind, pinned.queries[0], explain=True)
        print(f"\nEXPLAIN ANALYZE on Citus of one pinned search ({pinned.name}, planner: {strategy}), "
              f"task counts {task_counts(plans)}:")
        print("\n".join(plan_lines(plans)))
        counts = []
        for klass, _ in results:
            _, _, strategy, plans = await sides[1].search(klass.kind, klass.queries[0], explain=True)
            counts.append(f"{klass.name} {task_counts(plans)}")
        print(f"Citus task counts per class (EXPLAIN ANALYZE of its first query; one list entry per distributed "
              f"(sub)plan, {args.shards} shards): " + "; ".join(counts))
    finally:
        for side in sides:
            await side.close()


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--vectors", type=int, default=50_000, help="chunks with vectors (50,000)")
    ap.add_argument("--users", type=int, default=200, help="users, Zipf-sized (200)")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of user sizes (1.1)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shards", type=int, default=4, help="shards of the tenant tables (4: two per worker)")
    ap.add_argument("--queries", type=int, default=30, help="distinct queries per class (30)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds over a class's queries (5)")
    ap.add_argument("--budget", type=float, default=15.0, help="seconds per class, stops after a round (15)")
    ap.add_argument("--baseline", type=int, default=300, help="round trips per baseline and database (300)")
    ap.add_argument("--shared-buffers", default="512MB", help="of every server (512MB)")
    args = ap.parse_args()
    try:
        citus.require_citus()
    except citus.CitusError as e:
        sys.exit(str(e))
    t0 = time.perf_counter()
    cpus = os.cpu_count() or 1
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {cpus} CPUs")
    print(NOTE_CORES.format(cpus=cpus))
    ds = Dataset(args.vectors, args.users, args.zipf, args.seed)
    gen = Generator(ds.seed)
    print(f"data: {ds.chunks:,} chunks over {ds.users} users (Zipf s={ds.zipf:g}); embeddings are SYNTHETIC "
          f"pre-computed {DIM}-dim unit vectors (bench/filtered.py's generator; no model runs)")
    folder = Path(tempfile.mkdtemp(prefix="ragkeep-bench-citus-"))
    single_dir, citus_dir = folder / "single", folder / "coordinator"
    try:
        single: ServerInfo = start_server(single_dir, port=0, shared_buffers=args.shared_buffers)
        cluster = citus.start_cluster(citus_dir, 2, port=0, shared_buffers=args.shared_buffers)
        print(f"single node on port {single.port}; Citus coordinator on {cluster.coordinator.port}, workers on "
              + ", ".join(str(w.port) for w in cluster.workers) + f"; shared_buffers {args.shared_buffers} each")
        with Progress() as progress:
            print("-- single node", flush=True)
            setup(single.url, ds, gen, progress, None)
            print("-- Citus", flush=True)
            setup(cluster.coordinator.url, ds, gen, progress, args.shards)
        for warm, url in ((prewarm, single.url), (prewarm_citus, cluster.coordinator.url)):
            try:
                warm(url)
            except (psycopg.Error, RuntimeError) as e:  # the warm-up round still runs
                print(f"pg_prewarm failed ({str(e).strip()}): only the warm-up round warms the caches")
        print(f"set up in {time.perf_counter() - t0:.0f} s", flush=True)
        asyncio.run(measure(single.url, cluster.coordinator.url, ds, gen, args))
    finally:
        for stop, where in ((citus.stop_cluster, citus_dir), (stop_server, single_dir)):
            try:
                stop(where)
            except Exception as e:  # report and go on: the other servers must stop too
                print(f"stopping the server(s) in {where} failed: {e}", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; load average at the end: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
