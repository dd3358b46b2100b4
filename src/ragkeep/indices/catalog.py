"""Reading the vector indexes (HNSW, IVFFlat) that exist, from PostgreSQL's own catalogs: status,
build progress (pg_stat_progress_create_index), the owner of a partial per-tenant index
(tenant_indexes) and the share of each index in shared buffers (pg_buffercache).

On Citus the coordinator's index is an empty shell's: an index of a table Citus owns takes its
size, rows, scans, validity and build progress from its copies on the shards, summed
(:func:`_add_shard_figures`). The shared-buffers share stays the coordinator's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ragkeep.db.citus_sql import citus_tables, on_shards, shell_name
from ragkeep.db.paging import fetch_page

VECTOR_METHODS = ("hnsw", "ivfflat")

_COLUMNS = sql.SQL("""
       ic.relname AS name,
       tc.relname AS table_name,
       pg_get_indexdef(ic.oid) AS definition,
       am.amname AS method,
       opc.opcname AS opclass,
       coalesce(ic.reloptions, '{}') AS options,
       pg_relation_size(ic.oid) AS size_in_bytes,
       greatest(ic.reltuples, 0)::bigint AS row_estimate,
       CASE WHEN i.indisvalid THEN 'valid'
            WHEN EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = ic.oid)
            THEN 'building'
            -- REINDEX CONCURRENTLY's new copy (<name>_ccnew): its progress row names the old index
            WHEN ic.relname ~ '_ccnew[0-9]*$' AND EXISTS (
                SELECT 1 FROM pg_stat_progress_create_index p
                WHERE p.relid = i.indrelid AND p.command = 'REINDEX CONCURRENTLY')
            THEN 'building'
            ELSE 'invalid' END AS status,
       coalesce(s.idx_scan, 0) AS number_of_scans,
       coalesce(s.idx_tup_read, 0) AS tuples_read,
       coalesce(s.idx_tup_fetch, 0) AS tuples_fetched,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       t.owner_id,
       p.phase AS progress_phase, p.tuples_done, p.tuples_total, p.blocks_done, p.blocks_total""")
_FROM = sql.SQL("""pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = ic.oid
LEFT JOIN tenant_indexes t ON t.index_name = ic.relname
LEFT JOIN LATERAL (SELECT * FROM pg_stat_progress_create_index pp WHERE pp.index_relid = ic.oid LIMIT 1) p ON true""")
_WHERE = sql.SQL(
    "n.nspname = current_schema() AND am.amname = ANY(%(methods)s) "
    "AND (%(table)s::text IS NULL OR tc.relname = %(table)s) "
    "AND (%(name)s::text IS NULL OR ic.relname = %(name)s)"
)


def _arguments(options: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in options:
        key, _, value = opt.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def build_arguments(arguments: dict[str, Any]) -> dict[str, int]:
    """A listed index's ``arguments`` as IndexSpec's build arguments (``lists`` is ``n_lists``)."""
    return {"n_lists" if k == "lists" else k: v for k, v in arguments.items() if isinstance(v, int)}


async def list_vector_indexes(
    conn: psycopg.AsyncConnection,
    *,
    table: str | None = None,
    name: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Vector indexes with their method, operator class, arguments, size and use."""
    rows, total = await fetch_page(
        conn,
        columns=_COLUMNS,
        from_=_FROM,
        where=_WHERE,
        order_by=sql.SQL("ic.relname"),
        params={"methods": list(VECTOR_METHODS), "table": table, "name": name},
        limit=limit,
        offset=offset,
    )
    await _add_shard_figures(conn, rows)
    for r in rows:
        r["arguments"] = _arguments(r.pop("options"))
        r["progress"] = _progress(r)
    await _add_buffer_shares(conn, rows)
    return rows, total


#: On one shard (``%s``): each index's figures, as the coordinator's columns name them.
_SHARD_INDEXES = """SELECT coalesce(json_agg(json_build_object(
    'name', ic.relname, 'valid', i.indisvalid, 'size_in_bytes', pg_relation_size(ic.oid),
    'row_estimate', greatest(ic.reltuples, 0)::bigint, 'number_of_scans', coalesce(s.idx_scan, 0),
    'tuples_read', coalesce(s.idx_tup_read, 0), 'tuples_fetched', coalesce(s.idx_tup_fetch, 0),
    'progress_phase', p.phase, 'tuples_done', p.tuples_done, 'tuples_total', p.tuples_total,
    'blocks_done', p.blocks_done, 'blocks_total', p.blocks_total)), '[]')
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = ic.oid
LEFT JOIN LATERAL (SELECT * FROM pg_stat_progress_create_index pp WHERE pp.index_relid = ic.oid LIMIT 1) p ON true
WHERE i.indrelid = '%s'::regclass"""
_SUMMED = ("size_in_bytes", "row_estimate", "number_of_scans", "tuples_read", "tuples_fetched")
_PROGRESS = ("tuples_done", "tuples_total", "blocks_done", "blocks_total")


async def _add_shard_figures(conn: psycopg.AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Replace the figures of indexes on Citus tables by their shards' sums. Building while a
    shard builds its copy (the shell's index is done at once); invalid when a copy is invalid or
    missing. Progress: the shards building now, their counters summed, the first one's phase."""
    if not rows:
        return
    owned = await citus_tables(conn)
    for table in sorted({r["table_name"] for r in rows if r["table_name"] in owned}):
        listed = {r["name"]: r for r in rows if r["table_name"] == table}
        copies: dict[str, list[dict[str, Any]]] = {name: [] for name in listed}
        shards = await on_shards(conn, table, _SHARD_INDEXES)
        for shard in shards:
            for copy in shard.value:
                name = shell_name(copy["name"], shard.shard_id)
                if name in copies:
                    copies[name].append(copy)
        for name, r in listed.items():
            found = copies[name]
            for key in _SUMMED:
                r[key] = sum(int(c[key]) for c in found)
            building = [c for c in found if c["progress_phase"] is not None]
            if building:
                r["status"] = "building"
                r["progress_phase"] = building[0]["progress_phase"]
                for key in _PROGRESS:
                    r[key] = sum(int(c[key] or 0) for c in building)
            elif r["status"] == "valid" and (len(found) < len(shards) or not all(c["valid"] for c in found)):
                r["status"] = "invalid"


def _progress(r: dict[str, Any]) -> dict[str, Any] | None:
    """The build's current phase and counters; ``percent`` of the current phase when PostgreSQL
    gives a total (HNSW and IVFFlat report heap blocks while loading tuples)."""
    values = {k: r.pop(k) for k in ("progress_phase", "tuples_done", "tuples_total", "blocks_done", "blocks_total")}
    if values["progress_phase"] is None:
        return None
    percent = None
    if values["blocks_total"]:
        percent = round(100.0 * values["blocks_done"] / values["blocks_total"], 1)
    elif values["tuples_total"]:
        percent = round(100.0 * values["tuples_done"] / values["tuples_total"], 1)
    return {
        "phase": values["progress_phase"],
        "tuples_done": values["tuples_done"],
        "tuples_total": values["tuples_total"],
        "blocks_done": values["blocks_done"],
        "blocks_total": values["blocks_total"],
        "percent": percent,
    }


async def has_extension(conn: psycopg.AsyncConnection, name: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (name,))
    return await cur.fetchone() is not None


_BUFFERS = """
SELECT ic.relname,
       count(b.bufferid) AS cached_blocks,
       greatest(pg_relation_size(ic.oid) / current_setting('block_size')::bigint, 0) AS index_blocks
FROM pg_class ic
LEFT JOIN pg_buffercache b
       ON b.relfilenode = pg_relation_filenode(ic.oid) AND b.relforknumber = 0
      AND b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
WHERE ic.relname = ANY(%s) AND ic.relnamespace = current_schema()::regnamespace
GROUP BY ic.relname, ic.oid"""


async def _add_buffer_shares(conn: psycopg.AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """``shared_buffers``: {cached_blocks, index_blocks, share}; null without pg_buffercache."""
    if not rows:
        return
    if not await has_extension(conn, "pg_buffercache"):
        for r in rows:
            r["shared_buffers"] = None
        return
    cur = await conn.execute(_BUFFERS, ([r["name"] for r in rows],))
    found = {name: (int(cached), int(total)) for name, cached, total in await cur.fetchall()}
    for r in rows:
        cached, total = found.get(r["name"], (0, 0))
        r["shared_buffers"] = {
            "cached_blocks": cached,
            "index_blocks": total,
            "share": round(min(1.0, cached / total), 4) if total else None,
        }
