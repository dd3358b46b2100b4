"""Index work at server start, in the background: repair INVALID indexes, then warm the valid ones.

A build killed mid-way (server or PostgreSQL stopped, backend cancelled) leaves its index INVALID:
PostgreSQL keeps maintaining it on every write but never uses it for a search. At start we find
the vector indexes that are invalid and not being built right now (no pg_stat_progress_create_index
row), log them, and per ``[indices] on_invalid`` rebuild them (REINDEX INDEX CONCURRENTLY), drop
them, or only report them. Replicas starting together would all see the same indexes; a session
advisory lock lets one of them act, and it holds the lock until its repairs are done.

Copies left by an interrupted REINDEX CONCURRENTLY (``<index>_ccnew``, ``<index>_ccold``) are
dropped whatever the policy: rebuilding one would only make a valid duplicate (indices/leftovers.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.catalog import has_extension, list_vector_indexes
from ragkeep.indices.leftovers import drop_leftovers, is_leftover
from ragkeep.indices.warm import Warmer

log = logging.getLogger(__name__)

#: Any constant works; it only has to be the same for every replica ("rkix").
REPAIR_LOCK_ID = 0x726B6978


@dataclass
class RepairReport:
    acted: bool
    invalid: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


async def _all_indexes(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    rows, _ = await list_vector_indexes(conn, limit=10_000)
    return rows


async def repair_invalid(builder: IndexBuilder, policy: str | None = None) -> RepairReport:
    """Find invalid vector indexes and rebuild, drop or report them; returns what was done.

    Rebuilds run to completion inside this call (callers run it as a background task) so that the
    advisory lock is held until the repaired index is valid again."""
    policy = policy or builder.config.on_invalid
    async with await psycopg.AsyncConnection.connect(builder.url, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (REPAIR_LOCK_ID,))
        if not (await cur.fetchone())[0]:  # type: ignore[index]
            log.info("another ragkeep process is checking for invalid vector indexes; leaving it to them")
            return RepairReport(acted=False)
        try:
            leftovers = await drop_leftovers(conn)
            invalid = [r for r in await _all_indexes(conn) if r["status"] == "invalid" and not is_leftover(r["name"])]
            report = RepairReport(acted=True, invalid=[r["name"] for r in invalid], dropped=leftovers)
            for r in invalid:
                log.warning(
                    "vector index %s on %s is INVALID (an interrupted build?); on_invalid = %s",
                    r["name"], r["table_name"], policy,
                )
                if policy == "drop":
                    await conn.execute(
                        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(r["name"]))
                    )
                    await conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (r["name"],))
                    report.dropped.append(r["name"])
                    log.warning("dropped invalid index %s", r["name"])
                elif policy == "rebuild":
                    record = await builder.reindex(r["name"], r["table_name"], r["method"], r["arguments"])
                    if record.task is not None:
                        await record.task
                    if record.state == "succeeded":
                        report.rebuilt.append(r["name"])
                else:
                    log.warning("leaving invalid index %s in place; drop it with DELETE /v3/indices/%s/%s",
                                r["name"], r["table_name"], r["name"])
            return report
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (REPAIR_LOCK_ID,))


async def warm_all(builder: IndexBuilder, standby_url: str | None = None) -> list[str]:
    """Warm every valid vector index (pg_prewarm), one after the other; returns their names.

    With ``standby_url``, on that hot standby (pg_prewarm there fills the standby's own buffers;
    the index list is the primary's, replayed): searches routed to it start warm too."""
    warmer = builder.warmer if standby_url is None else Warmer(standby_url)
    async with await psycopg.AsyncConnection.connect(standby_url or builder.url, autocommit=True) as conn:
        if not await has_extension(conn, "pg_prewarm"):
            log.warning("pg_prewarm is not installed in this database: vector indexes start cold "
                        "(CREATE EXTENSION pg_prewarm as a superuser to warm them)")
            return []
        if not await has_extension(conn, "pg_buffercache"):
            log.warning("pg_buffercache is not installed in this database: the index list shows "
                        "shared_buffers = null (CREATE EXTENSION pg_buffercache to see it)")
        names = [r["name"] for r in await _all_indexes(conn) if r["status"] == "valid" and not is_leftover(r["name"])]
    for name in names:
        await warmer.warm(name)
    return names


def begin_startup(builder: IndexBuilder, standby_urls: Sequence[str] = ()) -> None:
    """:func:`on_start` as a background task of ``builder`` (drained with its builds)."""
    builder.spawn(on_start(builder, standby_urls), "index start-up")


async def on_start(builder: IndexBuilder, standby_urls: Sequence[str] = ()) -> None:
    """The start-up routine: repair, then warm (if ``[indices] prewarm``) on the primary and on
    each standby. Never raises."""
    try:
        await repair_invalid(builder)
        if builder.config.prewarm:
            await warm_all(builder)
    except psycopg.Error as e:
        log.error("index start-up work failed: %s", e)
    if builder.config.prewarm:
        for url in standby_urls:
            try:
                await warm_all(builder, url)
            except psycopg.Error as e:  # down or not yet a standby: the read router routes around it
                log.warning("could not warm the vector indexes of a standby: %s", str(e).strip().splitlines()[0])
