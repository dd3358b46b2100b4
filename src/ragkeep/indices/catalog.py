"""Reading the vector indexes (HNSW, IVFFlat) that exist, from PostgreSQL's own catalogs."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

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
            THEN 'building' ELSE 'invalid' END AS status,
       coalesce(s.idx_scan, 0) AS number_of_scans,
       coalesce(s.idx_tup_read, 0) AS tuples_read,
       coalesce(s.idx_tup_fetch, 0) AS tuples_fetched""")
_FROM = sql.SQL("""pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = ic.oid""")
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
    for r in rows:
        r["arguments"] = _arguments(r.pop("options"))
    return rows, total
