"""What PostgreSQL knows: cache hit counters, relation sizes, content totals, active users.

Shared by the Prometheus scrape and ``GET /v3/system/stats``. The cache counters are PostgreSQL's
cumulative ones (since the statistics were last reset): ``blks_hit`` counts shared-buffer hits
only, so a block found in the operating system's page cache counts as a read. Other sessions
publish their counters asynchronously (about once a second), so the last instant can be missing.

On Citus ``chunks`` and its indexes are empty shells on the coordinator: their counters are the
shards' sums (``citus_sql.on_shards``), read on the workers that did the work. The database's
own counters (``pg_stat_database``) stay the coordinator's.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ragkeep.db.citus_sql import citus_tables, on_shards, shell_name
from ragkeep.monitoring import housekeeping

_DATABASE_CACHE = """
SELECT blks_hit, blks_read, stats_reset FROM pg_stat_database WHERE datname = current_database()
"""
_CHUNKS_CACHE = """
SELECT heap_blks_hit, heap_blks_read, idx_blks_hit, idx_blks_read,
       coalesce(toast_blks_hit, 0) AS toast_blks_hit, coalesce(toast_blks_read, 0) AS toast_blks_read,
       coalesce(tidx_blks_hit, 0) AS tidx_blks_hit, coalesce(tidx_blks_read, 0) AS tidx_blks_read
FROM pg_statio_user_tables WHERE relname = 'chunks' AND schemaname = current_schema()
"""
_CHUNK_INDEXES = """
SELECT io.indexrelname AS index, am.amname AS method, io.idx_blks_hit AS blks_hit, io.idx_blks_read AS blks_read,
       st.idx_scan AS scans, st.idx_tup_read AS tuples_read, st.idx_tup_fetch AS tuples_fetched,
       pg_relation_size(io.indexrelid) AS bytes
FROM pg_statio_user_indexes io
JOIN pg_stat_user_indexes st ON st.indexrelid = io.indexrelid
JOIN pg_class ic ON ic.oid = io.indexrelid JOIN pg_am am ON am.oid = ic.relam
WHERE io.relname = 'chunks' AND io.schemaname = current_schema()
ORDER BY io.indexrelname
"""
#: One shard of chunks (``%s``, used once): its pg_statio_user_tables row and its indexes' rows.
_SHARD_CHUNKS_CACHE = """WITH t AS (SELECT '%s'::regclass AS oid)
SELECT json_build_object(
  'table', (SELECT row_to_json(x) FROM (
      SELECT heap_blks_hit, heap_blks_read, idx_blks_hit, idx_blks_read,
             coalesce(toast_blks_hit, 0) AS toast_blks_hit, coalesce(toast_blks_read, 0) AS toast_blks_read,
             coalesce(tidx_blks_hit, 0) AS tidx_blks_hit, coalesce(tidx_blks_read, 0) AS tidx_blks_read
      FROM pg_statio_user_tables WHERE relid = t.oid) x),
  'indexes', (SELECT coalesce(json_agg(json_build_object(
      'index', io.indexrelname, 'blks_hit', io.idx_blks_hit, 'blks_read', io.idx_blks_read,
      'scans', st.idx_scan, 'tuples_read', st.idx_tup_read, 'tuples_fetched', st.idx_tup_fetch,
      'bytes', pg_relation_size(io.indexrelid))), '[]')
    FROM pg_statio_user_indexes io JOIN pg_stat_user_indexes st ON st.indexrelid = io.indexrelid
    WHERE io.relid = t.oid))
FROM t"""
_CHUNKS_PARTS = ("heap_blks_hit", "heap_blks_read", "idx_blks_hit", "idx_blks_read",
                 "toast_blks_hit", "toast_blks_read", "tidx_blks_hit", "tidx_blks_read")
_INDEX_SUMMED = ("blks_hit", "blks_read", "scans", "tuples_read", "tuples_fetched", "bytes")
_TOTALS = """
SELECT (SELECT count(*) FROM users) AS users,
       coalesce(sum(document_count), 0)::bigint AS documents,
       coalesce(sum(chunk_count), 0)::bigint AS chunks,
       count(*) FILTER (WHERE document_count > 0) AS users_with_documents
FROM owner_stats
"""
# Users with an authenticated request in the current UTC hour / day (day: hourly rows are kept
# for more than a day, so they alone answer it).
_ACTIVE_NOW = """
SELECT count(DISTINCT user_id) FILTER (WHERE hour >= date_trunc('hour', now(), 'UTC')) AS hour,
       count(DISTINCT user_id) AS day
FROM user_activity WHERE hour >= date_trunc('day', now(), 'UTC')
"""


def hit_ratio(hit: int | None, read: int | None) -> float | None:
    """hit / (hit + read); None before any block was asked for."""
    total = (hit or 0) + (read or 0)
    return round((hit or 0) / total, 6) if total else None


async def _rows(conn: psycopg.AsyncConnection, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _chunks_on_shards(conn: psycopg.AsyncConnection, indexes: list[dict[str, Any]]) -> dict[str, Any]:
    """chunks' counters summed over its shards; ``indexes`` (the coordinator's rows, for names and
    methods) get their copies' sums in place. A copy whose name does not map back is left out."""
    chunks = dict.fromkeys(_CHUNKS_PARTS, 0)
    sums = {row["index"]: dict.fromkeys(_INDEX_SUMMED, 0) for row in indexes}
    for shard in await on_shards(conn, "chunks", _SHARD_CHUNKS_CACHE):
        for key, value in (shard.value.get("table") or {}).items():
            chunks[key] += int(value or 0)
        for copy in shard.value.get("indexes") or []:
            name = shell_name(copy["index"], shard.shard_id)
            if name in sums:
                for key in _INDEX_SUMMED:
                    sums[name][key] += int(copy[key] or 0)
    for row in indexes:
        row.update(sums[row["index"]])
    return chunks


async def cache_stats(conn: psycopg.AsyncConnection) -> dict[str, Any]:
    """Hit ratios of the database, of chunks (heap, indexes, TOAST) and of each chunks index
    (on Citus, chunks' and its indexes' are the shards' sums)."""
    db = (await _rows(conn, _DATABASE_CACHE) or [{"blks_hit": 0, "blks_read": 0, "stats_reset": None}])[0]
    rows = await _rows(conn, _CHUNK_INDEXES)
    if "chunks" in await citus_tables(conn):
        chunks = await _chunks_on_shards(conn, rows)
    else:
        chunks = (await _rows(conn, _CHUNKS_CACHE) or [{}])[0]
    parts = {}
    for part, prefix in (("heap", "heap"), ("indexes", "idx"), ("toast", "toast"), ("toast_indexes", "tidx")):
        hit, read = int(chunks.get(f"{prefix}_blks_hit") or 0), int(chunks.get(f"{prefix}_blks_read") or 0)
        parts[part] = {"blks_hit": hit, "blks_read": read, "hit_ratio": hit_ratio(hit, read)}
    indexes = []
    for row in rows:
        row["hit_ratio"] = hit_ratio(row["blks_hit"], row["blks_read"])
        row["tuples_per_scan"] = round(row["tuples_read"] / row["scans"], 1) if row["scans"] else None
        indexes.append(row)
    return {
        "database": {
            "blks_hit": int(db["blks_hit"] or 0),
            "blks_read": int(db["blks_read"] or 0),
            "hit_ratio": hit_ratio(db["blks_hit"], db["blks_read"]),
            "stats_reset": db["stats_reset"],
        },
        "chunks": parts,
        "chunk_indexes": indexes,
    }


async def relation_sizes(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    """Every table and index of the schema now: relation, kind, table_name, bytes, est_rows
    (on Citus, summed over the shards)."""
    return await housekeeping.relation_sizes(conn)


async def totals(conn: psycopg.AsyncConnection) -> dict[str, int]:
    row = (await _rows(conn, _TOTALS))[0]
    return {k: int(v) for k, v in row.items()}


async def active_now(conn: psycopg.AsyncConnection) -> dict[str, int]:
    row = (await _rows(conn, _ACTIVE_NOW))[0]
    return {"hour": int(row["hour"]), "day": int(row["day"])}
