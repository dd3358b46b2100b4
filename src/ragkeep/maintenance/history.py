"""The ``maintenance_runs`` table: claiming a scheduled tick, recording a run, reading history.

The claim is the heart of "each tick runs exactly once across replicas": an advisory lock alone
only keeps two runs apart in time, so a slow replica that reaches a tick after the first one
finished would run it again. The row keyed by ``(task, scheduled_for)`` is permanent, so the
second INSERT conflicts whenever it comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ragkeep.db.paging import fetch_page
from ragkeep.db.replica import replica_name

Task = Literal["vacuum", "reindex"]
Trigger = Literal["schedule", "manual"]
Status = Literal["queued", "running", "succeeded", "failed", "skipped"]

#: Every maintenance run holds this session-level advisory lock while it works ("ragm").
MAINTENANCE_LOCK_ID = 0x7261676D

COLUMNS = (
    "id, task, trigger, scheduled_for, parent_id, status, vacuum_analyze, vacuum_full, reindex_first, "
    "tables, requested_at, started_at, finished_at, dead_tuples_before, dead_tuples_after, bytes_before, "
    "bytes_after, items, reindex_advice, error, replica, backend_pid"
)


@dataclass(frozen=True)
class RunOptions:
    analyze: bool = True
    full: bool = False
    #: REINDEX CONCURRENTLY the chunks' vector indexes before the VACUUM.
    reindex: bool = False
    #: None: every table of the schema (or the configured ``vacuum_tables``).
    tables: tuple[str, ...] | None = None


async def claim(
    conn: psycopg.AsyncConnection,
    *,
    task: Task,
    trigger: Trigger,
    options: RunOptions,
    tables: list[str],
    scheduled_for: datetime | None = None,
    parent_id: int | None = None,
    status: Status = "queued",
) -> dict[str, Any] | None:
    """Insert the run; None when ``(task, scheduled_for)`` was claimed already (by anyone).

    ``conn`` must be the connection that will run the work: its backend pid is recorded, so that
    :func:`sweep_interrupted` can tell a dead replica's row from a live one.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "INSERT INTO maintenance_runs (task, trigger, scheduled_for, parent_id, status, vacuum_analyze, "
                "vacuum_full, reindex_first, tables, replica, backend_pid, started_at) "
                "VALUES (%(task)s, %(trigger)s, %(scheduled_for)s, %(parent_id)s, %(status)s, %(analyze)s, "
                "%(full)s, %(reindex)s, %(tables)s, %(replica)s, pg_backend_pid(), "
                "CASE WHEN %(status)s = 'running' THEN clock_timestamp() END) "
                "ON CONFLICT (task, scheduled_for) DO NOTHING RETURNING {}"
            ).format(sql.SQL(COLUMNS)),
            {
                "task": task,
                "trigger": trigger,
                "scheduled_for": scheduled_for,
                "parent_id": parent_id,
                "status": status,
                "analyze": options.analyze,
                "full": options.full,
                "reindex": options.reindex,
                "tables": tables,
                "replica": replica_name(),
            },
        )
        return await cur.fetchone()


async def mark_started(conn: psycopg.AsyncConnection, run_id: int) -> None:
    await conn.execute(
        "UPDATE maintenance_runs SET status = 'running', started_at = clock_timestamp() WHERE id = %s", (run_id,)
    )


async def save_items(conn: psycopg.AsyncConnection, run_id: int, items: list[dict[str, Any]]) -> None:
    """Progress so far (the CLI shows the table being worked on)."""
    await conn.execute("UPDATE maintenance_runs SET items = %s WHERE id = %s", (Jsonb(items), run_id))


async def finish(
    conn: psycopg.AsyncConnection,
    run_id: int,
    *,
    status: Status,
    items: list[dict[str, Any]],
    error: str | None = None,
    advice: dict[str, Any] | None = None,
) -> None:
    """Close the run; the totals are the sums of the items that have the figure."""

    def total(key: str) -> int | None:
        values = [i[key] for i in items if i.get(key) is not None]
        return sum(values) if values else None

    await conn.execute(
        "UPDATE maintenance_runs SET status = %(status)s, finished_at = clock_timestamp(), items = %(items)s, "
        "error = %(error)s, reindex_advice = coalesce(%(advice)s, reindex_advice), "
        "started_at = coalesce(started_at, clock_timestamp()), "
        "dead_tuples_before = %(db)s, dead_tuples_after = %(da)s, bytes_before = %(bb)s, bytes_after = %(ba)s "
        "WHERE id = %(id)s",
        {
            "id": run_id,
            "status": status,
            "items": Jsonb(items),
            "error": error,
            "advice": Jsonb(advice) if advice is not None else None,
            "db": total("dead_tuples_before"),
            "da": total("dead_tuples_after"),
            "bb": total("bytes_before"),
            "ba": total("bytes_after"),
        },
    )


async def sweep_interrupted(conn: psycopg.AsyncConnection) -> int:
    """Fail the runs whose maintenance connection is gone (a replica killed mid-run).

    A run is alive while the backend that claimed it exists; ``backend_start`` guards against a
    recycled pid. Runs whose replica stopped cleanly were closed by that replica already.
    """
    cur = await conn.execute(
        "UPDATE maintenance_runs r SET status = 'failed', finished_at = clock_timestamp(), "
        "error = 'interrupted: the server process running it stopped (its database session is gone)' "
        "WHERE r.status IN ('queued', 'running') AND NOT EXISTS ("
        "  SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid"
        # backend_start is NULL for another role's session without pg_read_all_stats: alive.
        "  AND (a.backend_start IS NULL OR a.backend_start <= r.requested_at))"
    )
    return cur.rowcount


_FILTER = sql.SQL(
    "(%(task)s::text IS NULL OR task = %(task)s) AND (%(trigger)s::text IS NULL OR trigger = %(trigger)s) "
    "AND (%(status)s::text IS NULL OR status = %(status)s) "
    "AND (%(parent_id)s::bigint IS NULL OR parent_id = %(parent_id)s)"
)


async def list_runs(
    conn: psycopg.AsyncConnection,
    *,
    offset: int = 0,
    limit: int = 100,
    task: Task | None = None,
    trigger: Trigger | None = None,
    status: Status | None = None,
    parent_id: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first."""
    return await fetch_page(
        conn,
        columns=sql.SQL(COLUMNS),
        from_=sql.SQL("maintenance_runs"),
        where=_FILTER,
        order_by=sql.SQL("id DESC"),
        params={"task": task, "trigger": trigger, "status": status, "parent_id": parent_id},
        limit=limit,
        offset=offset,
    )


async def get_run(conn: psycopg.AsyncConnection, run_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT {} FROM maintenance_runs WHERE id = %s").format(sql.SQL(COLUMNS)), (run_id,))
        return await cur.fetchone()


async def last_run(conn: psycopg.AsyncConnection) -> dict[str, Any] | None:
    """The run that started last (skipped ticks never start)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {} FROM maintenance_runs WHERE started_at IS NOT NULL AND status <> 'skipped' "
                "ORDER BY started_at DESC LIMIT 1"
            ).format(sql.SQL(COLUMNS))
        )
        return await cur.fetchone()
