"""Leftovers of an interrupted ``REINDEX INDEX CONCURRENTLY``: ``<index>_ccnew[N]`` and ``<index>_ccold[N]``.

REINDEX CONCURRENTLY builds a copy named ``<index>_ccnew``, swaps it in (the old index becomes
``<index>_ccold``) and drops the old one. Killed before the end (a deadlock, a cancel, a crash),
it leaves the copy behind: INVALID, yet PostgreSQL maintains it on every write. Such a copy is
never a ragkeep index. Rebuilding it (the start-up repair's ``rebuild`` policy did) makes it a
valid duplicate under the leftover's name, which every later REINDEX copied again: one database
ended with 397 vector indexes on an 895-row table. So leftovers are dropped, never rebuilt, and
the listings that choose what to reindex leave them out.
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

#: PostgreSQL names the copies ``<name>_ccnew``, ``<name>_ccnew1``, ... and ``<name>_ccold...``.
LEFTOVER_SUFFIX = "_cc(new|old)[0-9]*$"
_LEFTOVER = re.compile(LEFTOVER_SUFFIX)

#: Leftover indexes of the schema (any access method), except on a table where a REINDEX
#: CONCURRENTLY is under way right now: its ``_ccnew`` / ``_ccold`` are not leftovers yet.
_FIND = """
SELECT ic.relname, tc.relname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
WHERE ic.relnamespace = current_schema()::regnamespace
  AND ic.relname ~ %(suffix)s
  AND (%(table)s::text IS NULL OR tc.relname = %(table)s)
  AND NOT EXISTS (
      SELECT 1 FROM pg_stat_progress_create_index p
      WHERE p.relid = i.indrelid AND p.command = 'REINDEX CONCURRENTLY'
        AND p.datid = (SELECT oid FROM pg_database WHERE datname = current_database()))
ORDER BY ic.relname"""


def is_leftover(name: str) -> bool:
    return _LEFTOVER.search(name) is not None


async def drop_leftovers(conn: psycopg.AsyncConnection, table: str | None = None) -> list[str]:
    """``DROP INDEX CONCURRENTLY`` every leftover (of ``table``, or of the schema); their names.

    Needs an autocommit connection. A drop that fails is logged and left for the next try (the
    next reindex run or server start); the others still go.
    """
    if not conn.autocommit:
        raise ValueError("DROP INDEX CONCURRENTLY needs an autocommit connection")
    cur = await conn.execute(_FIND, {"suffix": LEFTOVER_SUFFIX, "table": table})
    dropped: list[str] = []
    for name, on_table in await cur.fetchall():
        try:
            await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
            await conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (name,))
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.Error as e:
            log.warning("could not drop %s, left by an interrupted REINDEX CONCURRENTLY on %s: %s", name, on_table, e)
            continue
        log.warning("dropped index %s on %s, left by an interrupted REINDEX CONCURRENTLY", name, on_table)
        dropped.append(name)
    return dropped
