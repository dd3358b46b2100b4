"""When to rebuild the chunks' vector indexes instead of letting VACUUM repair them, and doing it.

VACUUM of a table with an HNSW index walks the whole graph and repairs every neighbour list that
pointed at a deleted row: measured here, 103 s after deleting 30 % of 100k chunks, against 26 s
to ``REINDEX INDEX CONCURRENTLY`` the rest. Rebuilding first means the VACUUM that follows finds
no dead rows in the new index, so its graph pass has nothing to repair. CONCURRENTLY keeps
searches and ingestion running meanwhile (it cannot run in a transaction block, so it uses the
run's autocommit connection).

A REINDEX CONCURRENTLY that fails leaves its copy (``<index>_ccnew``) behind; the run drops such
leftovers before it starts and after a failure, and never rebuilds one (indices/leftovers.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ragkeep.config import IndicesConfig, MaintenanceConfig
from ragkeep.indices.catalog import build_arguments, list_vector_indexes
from ragkeep.indices.leftovers import drop_leftovers, is_leftover
from ragkeep.indices.memory import apply_plan, column_dimension, plan_build
from ragkeep.maintenance.vacuum import Progress, table_stats

CHUNKS = "chunks"


@dataclass(frozen=True)
class VectorIndex:
    name: str
    method: str
    valid: bool
    bytes: int
    rows: int = 0
    arguments: dict[str, int] = field(default_factory=dict)
    #: A copy left by an interrupted REINDEX CONCURRENTLY: dropped, never advised nor rebuilt.
    leftover: bool = False


@dataclass(frozen=True)
class ReindexAdvice:
    recommended: bool
    reason: str
    table: str
    live_tuples: int
    dead_tuples: int
    dead_share: float
    threshold_share: float
    threshold_dead_tuples: int
    auto_reindex: bool
    indexes: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def vector_indexes(conn: psycopg.AsyncConnection, table: str = CHUNKS) -> list[VectorIndex]:
    """HNSW and IVFFlat indexes of ``table`` (including per-owner partial ones), from the catalog
    the index routes list: an index being built or rebuilt is not ``valid``, so never touched."""
    rows, _ = await list_vector_indexes(conn, table=table, limit=10_000)
    return [
        VectorIndex(r["name"], r["method"], r["status"] == "valid", int(r["size_in_bytes"]), int(r["row_estimate"]),
                    build_arguments(r["arguments"]), is_leftover(r["name"]))
        for r in rows
    ]


async def advise(conn: psycopg.AsyncConnection, config: MaintenanceConfig) -> ReindexAdvice:
    """Recommend a rebuild when enough chunks are dead (a large delete not yet vacuumed)."""
    stats = (await table_stats(conn, [CHUNKS])).get(CHUNKS)
    indexes = [i for i in await vector_indexes(conn) if i.valid and not i.leftover]
    live, dead = (stats.live_tuples, stats.dead_tuples) if stats else (0, 0)
    share = stats.dead_share if stats else 0.0
    names = [i.name for i in indexes]

    def advice(recommended: bool, reason: str, statements: list[str] | None = None) -> ReindexAdvice:
        return ReindexAdvice(
            recommended, reason, table=CHUNKS, live_tuples=live, dead_tuples=dead, dead_share=round(share, 4),
            threshold_share=config.reindex_dead_share, threshold_dead_tuples=config.reindex_min_dead_tuples,
            auto_reindex=config.auto_reindex, indexes=names, statements=statements or [],
        )

    if not indexes:
        return advice(False, "chunks has no valid vector index (searches scan exactly)")
    if share < config.reindex_dead_share:
        reason = f"{share:.1%} of chunks are dead, below reindex_dead_share {config.reindex_dead_share:.0%}"
        return advice(False, reason)
    if dead < config.reindex_min_dead_tuples:
        reason = f"{dead} dead chunks, fewer than reindex_min_dead_tuples {config.reindex_min_dead_tuples}"
        return advice(False, reason)
    statements = [f"REINDEX INDEX CONCURRENTLY {sql.Identifier(i.name).as_string(None)}" for i in indexes]
    reason = (
        f"{share:.1%} of chunks ({dead} rows) are dead, at or above reindex_dead_share "
        f"{config.reindex_dead_share:.0%}: rebuilding the vector indexes from the live rows is cheaper than "
        "VACUUM repairing the graph"
        + ("; runs at the next scheduled tick (auto_reindex)" if config.auto_reindex else "")
    )
    return advice(True, reason, statements)


async def reindex_vector_indexes(
    conn: psycopg.AsyncConnection, progress: Progress | None = None, indices_config: IndicesConfig | None = None
) -> list[dict[str, Any]]:
    """``REINDEX INDEX CONCURRENTLY`` each valid vector index of chunks; one item per index. Each
    rebuild runs with a build's memory plan (``[indices] build_memory_cap_mb``).

    Leftover copies of an interrupted REINDEX are dropped first (an item ``dropped`` each), and
    again after a rebuild that fails, so a failure never leaves a copy to be maintained forever.
    """
    indices_config = indices_config or IndicesConfig()
    if not conn.autocommit:
        raise ValueError("REINDEX CONCURRENTLY needs an autocommit connection")
    items: list[dict[str, Any]] = []
    stats = (await table_stats(conn, [CHUNKS])).get(CHUNKS)
    await _drop_leftovers(conn, items)
    for index in [i for i in await vector_indexes(conn) if not i.leftover]:
        item: dict[str, Any] = {
            "index": index.name, "table": CHUNKS, "method": index.method, "bytes_before": index.bytes
        }
        if not index.valid:
            items.append({**item, "status": "skipped", "note": "invalid (a failed build); drop or rebuild it first"})
            continue
        item["status"] = "running"
        items.append(item)
        if progress:
            await progress(items)
        started = time.perf_counter()
        try:
            # The same memory plan as a build (maintenance_work_mem for the graph, parallel workers):
            # with the server's default, an HNSW rebuild that outgrows memory runs many times slower.
            dim = await column_dimension(conn, CHUNKS, "embedding")
            await apply_plan(conn, plan_build(index.method, index.arguments, index.rows, dim, indices_config))
            await conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(index.name)))
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.Error as e:
            item.update(status="failed", note=str(e).strip(), seconds=round(time.perf_counter() - started, 3))
            await _drop_leftovers(conn, items)
            continue
        item["seconds"] = round(time.perf_counter() - started, 3)
        # From the catalog, as bytes_before was: on Citus both are the shards' sums.
        rebuilt, _ = await list_vector_indexes(conn, table=CHUNKS, name=index.name, limit=1)
        item.update(status="done", bytes_after=int(rebuilt[0]["size_in_bytes"]) if rebuilt else None)
        item["bytes_reclaimed"] = index.bytes - item["bytes_after"] if item["bytes_after"] is not None else None
    if stats is not None and items:
        items[0].setdefault("dead_tuples_before", stats.dead_tuples)
    return items


async def _drop_leftovers(conn: psycopg.AsyncConnection, items: list[dict[str, Any]]) -> None:
    items.extend(
        {"index": name, "table": CHUNKS, "status": "dropped",
         "note": "left by an interrupted REINDEX CONCURRENTLY; dropped, not rebuilt"}
        for name in await drop_leftovers(conn, CHUNKS)
    )
