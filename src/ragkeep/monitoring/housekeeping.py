"""Storage snapshots, and keeping the activity tables bounded: run once per slot across replicas.

Every ``[metrics] snapshot_minutes`` each replica tries to INSERT the slot's row into
``storage_snapshots``; the primary key lets one through (a late replica conflicts, as with the
maintenance scheduler's claim rows). The winner writes the sizes of every table and index in the
same transaction, so a snapshot is whole or absent (on Citus the tables it owns are measured on
their shards, summed: :func:`relation_sizes`), then, in transactions of their own:

- rolls hourly activity older than ``hourly_retention_days`` into daily rows (search, request and
  user activity): the rows are deleted and summed into the daily table in one statement, so a
  figure is counted in one table or the other, never both, never neither;
- deletes daily rows older than ``daily_retention_days``;
- thins snapshots older than ``storage_detail_days`` to the first of each UTC day and deletes
  those older than ``storage_retention_days``;
- forgets replicas unseen for a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ragkeep.config import MetricsConfig
from ragkeep.db.citus_sql import citus_tables, on_shards, shell_name
from ragkeep.db.replica import replica_name
from ragkeep.monitoring.instance import forget_gone

log = logging.getLogger(__name__)

#: Sizes of every table and index of ragkeep's schema (TOAST counted with its table).
SIZES_SQL = """
SELECT c.relname AS relation, CASE c.relkind WHEN 'i' THEN 'index' ELSE 'table' END AS kind,
       coalesce(t.relname, c.relname) AS table_name,
       CASE c.relkind WHEN 'i' THEN pg_total_relation_size(c.oid) ELSE pg_table_size(c.oid) END AS bytes,
       CASE WHEN c.relkind = 'i' THEN NULL ELSE c.reltuples::bigint END AS est_rows
FROM pg_class c
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'i', 'm')
  AND (c.relkind <> 'i' OR t.relkind IN ('r', 'm'))
ORDER BY c.relname
"""

#: SIZES_SQL's figures of one shard (``%s``) and its indexes, for a table Citus owns.
_SHARD_SIZES = """WITH t AS (SELECT '%s'::regclass AS oid)
SELECT coalesce(json_agg(json_build_object(
    'relation', c.relname,
    'bytes', CASE c.relkind WHEN 'i' THEN pg_total_relation_size(c.oid) ELSE pg_table_size(c.oid) END,
    'est_rows', c.reltuples::bigint)), '[]')
FROM t, pg_class c
WHERE c.oid = t.oid OR c.oid IN (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = t.oid)"""
_STORE_ROW = ("INSERT INTO storage_sizes (taken_at, relation, kind, table_name, bytes, est_rows) "
              "VALUES (%s, %s, %s, %s, %s, %s)")

_CLAIM = "INSERT INTO storage_snapshots (taken_at, replica) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING taken_at"
_STORE_SIZES = "INSERT INTO storage_sizes (taken_at, relation, kind, table_name, bytes, est_rows) SELECT %s, s.* FROM ("
_STORE_SIZES_END = ") s"

_ROLLUP_SEARCHES = """
WITH moved AS (DELETE FROM search_activity WHERE hour < %(cutoff)s RETURNING *)
INSERT INTO search_activity_daily AS d (day, user_id, kind, strategy, scope_bucket, cross_user, searches,
    short_results, fallbacks, vectors, total_ms, db_ms, max_ms, latency_hist)
SELECT date_trunc('day', hour, 'UTC'), user_id, kind, strategy, scope_bucket, cross_user, sum(searches),
       sum(short_results), sum(fallbacks), sum(vectors), sum(total_ms), sum(db_ms), max(max_ms),
       ragkeep_hist_sum(latency_hist)
FROM moved GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
ON CONFLICT (day, user_id, kind, strategy, scope_bucket, cross_user) DO UPDATE SET
    searches = d.searches + excluded.searches,
    short_results = d.short_results + excluded.short_results,
    fallbacks = d.fallbacks + excluded.fallbacks,
    vectors = d.vectors + excluded.vectors,
    total_ms = d.total_ms + excluded.total_ms,
    db_ms = d.db_ms + excluded.db_ms,
    max_ms = greatest(d.max_ms, excluded.max_ms),
    latency_hist = ragkeep_hist_add(d.latency_hist, excluded.latency_hist)
"""
_ROLLUP_REQUESTS = """
WITH moved AS (DELETE FROM request_activity WHERE hour < %(cutoff)s RETURNING *)
INSERT INTO request_activity_daily AS d (day, method, route, status_class, requests, total_ms, max_ms, latency_hist)
SELECT date_trunc('day', hour, 'UTC'), method, route, status_class, sum(requests), sum(total_ms), max(max_ms),
       ragkeep_hist_sum(latency_hist)
FROM moved GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (day, method, route, status_class) DO UPDATE SET
    requests = d.requests + excluded.requests,
    total_ms = d.total_ms + excluded.total_ms,
    max_ms = greatest(d.max_ms, excluded.max_ms),
    latency_hist = ragkeep_hist_add(d.latency_hist, excluded.latency_hist)
"""
_ROLLUP_USERS = """
WITH moved AS (DELETE FROM user_activity WHERE hour < %(cutoff)s RETURNING *)
INSERT INTO user_activity_daily AS d (day, user_id, requests, errors, active_hours)
SELECT date_trunc('day', hour, 'UTC'), user_id, sum(requests), sum(errors), count(*)
FROM moved GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (day, user_id) DO UPDATE SET
    requests = d.requests + excluded.requests,
    errors = d.errors + excluded.errors,
    active_hours = d.active_hours + excluded.active_hours
"""
_EXPIRE_DAILY = (
    "DELETE FROM search_activity_daily WHERE day < %(cutoff)s",
    "DELETE FROM request_activity_daily WHERE day < %(cutoff)s",
    "DELETE FROM user_activity_daily WHERE day < %(cutoff)s",
)
# Older than the detail window: keep the first snapshot of each UTC day; older than retention: none.
_THIN_SNAPSHOTS = """
DELETE FROM storage_snapshots s
WHERE s.taken_at < %(detail)s
  AND s.taken_at > (SELECT min(f.taken_at) FROM storage_snapshots f
                    WHERE date_trunc('day', f.taken_at, 'UTC') = date_trunc('day', s.taken_at, 'UTC'))
"""
_EXPIRE_SNAPSHOTS = "DELETE FROM storage_snapshots WHERE taken_at < %(cutoff)s"


def slot_of(now: datetime, minutes: int) -> datetime:
    """The start of the snapshot slot holding ``now`` (slots are aligned to UTC midnight)."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = int((now - midnight).total_seconds() // (minutes * 60))
    return midnight + timedelta(minutes=minutes * elapsed)


def _day(now: datetime, days_back: int) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_back)


@dataclass
class HousekeepingResult:
    """What one slot's run did; ``claimed`` False means another replica has the slot."""

    slot: datetime
    claimed: bool
    relations: int = 0
    rolled_up: dict[str, int] | None = None
    expired: int = 0
    snapshots_removed: int = 0


async def relation_sizes(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    """SIZES_SQL's rows; on Citus, a table it owns and its indexes have their shards' sums
    (the coordinator's shells are empty). ``est_rows`` stays -1 when no shard was analyzed."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SIZES_SQL)
        rows = await cur.fetchall()
    owned = await citus_tables(conn)
    for table in sorted({r["table_name"] for r in rows if r["table_name"] in owned}):
        listed = {r["relation"]: r for r in rows if r["table_name"] == table}
        sums: dict[str, list[int]] = {name: [0, -1] for name in listed}
        for shard in await on_shards(conn, table, _SHARD_SIZES):
            for part in shard.value:
                name = shell_name(part["relation"], shard.shard_id)
                if name in sums:
                    sums[name][0] += int(part["bytes"])
                    if part["est_rows"] >= 0:
                        sums[name][1] = max(sums[name][1], 0) + int(part["est_rows"])
        for name, r in listed.items():
            r["bytes"] = sums[name][0]
            if r["kind"] == "table":
                r["est_rows"] = sums[name][1]
    return rows


async def take_snapshot(conn: psycopg.AsyncConnection, slot: datetime) -> int | None:
    """Claim ``slot`` and store every relation's size in it; None when the slot was claimed already."""
    async with conn.transaction():
        claimed = await (await conn.execute(_CLAIM, (slot, replica_name()))).fetchone()
        if claimed is None:
            return None
        if not await citus_tables(conn):
            cur = await conn.execute(_STORE_SIZES + SIZES_SQL + _STORE_SIZES_END, (slot,))
            return cur.rowcount
        rows = await relation_sizes(conn)
        async with conn.cursor() as cur:
            await cur.executemany(_STORE_ROW, [
                (slot, r["relation"], r["kind"], r["table_name"], r["bytes"], r["est_rows"]) for r in rows
            ])
        return len(rows)


async def roll_up(conn: psycopg.AsyncConnection, config: MetricsConfig, now: datetime) -> dict[str, int]:
    """Move hourly rows older than the hourly retention into daily rows; expire old daily rows.

    Returns the hourly rows moved per table (and ``expired_daily``). The cutoff is a UTC
    midnight, so a day is rolled up whole."""
    cutoff = _day(now, config.hourly_retention_days)
    moved: dict[str, int] = {}
    for table, statement in (
        ("search_activity", _ROLLUP_SEARCHES),
        ("request_activity", _ROLLUP_REQUESTS),
        ("user_activity", _ROLLUP_USERS),
    ):
        async with conn.transaction():
            cur = await conn.execute(statement, {"cutoff": cutoff})
            moved[table] = cur.rowcount  # daily rows written (inserted or added to)
    expired = 0
    async with conn.transaction():
        for statement in _EXPIRE_DAILY:
            cur = await conn.execute(statement, {"cutoff": _day(now, config.daily_retention_days)})
            expired += cur.rowcount
    moved["expired_daily"] = expired
    return moved


async def thin_snapshots(conn: psycopg.AsyncConnection, config: MetricsConfig, now: datetime) -> int:
    async with conn.transaction():
        a = await conn.execute(_EXPIRE_SNAPSHOTS, {"cutoff": now - timedelta(days=config.storage_retention_days)})
        b = await conn.execute(_THIN_SNAPSHOTS, {"detail": now - timedelta(days=config.storage_detail_days)})
        return a.rowcount + b.rowcount


async def run_slot(
    conn: psycopg.AsyncConnection, config: MetricsConfig, now: datetime | None = None
) -> HousekeepingResult:
    """One slot's work, if this replica wins the slot. ``conn`` must not be in a transaction."""
    now = now or datetime.now(UTC)
    slot = slot_of(now, config.snapshot_minutes)
    relations = await take_snapshot(conn, slot)
    if relations is None:
        return HousekeepingResult(slot, claimed=False)
    rolled = await roll_up(conn, config, now)
    removed = await thin_snapshots(conn, config, now)
    async with conn.transaction():
        await forget_gone(conn)
    return HousekeepingResult(
        slot, claimed=True, relations=relations, rolled_up=rolled, expired=rolled["expired_daily"],
        snapshots_removed=removed,
    )
