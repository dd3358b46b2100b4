"""Loading vector indexes into shared buffers with pg_prewarm.

A new or restarted index is cold: its first searches read the graph from disk page by page.
``pg_prewarm(index)`` reads it all once. The state of each warm-up this process ran is kept for
the index list (``warm``); which share of an index is in shared buffers *now* comes from
pg_buffercache in the catalog.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from ragkeep.db.citus_sql import citus_tables, on_shards

log = logging.getLogger(__name__)


@dataclass
class WarmState:
    state: Literal["warming", "warm", "failed"]
    started_at: datetime
    warmed_at: datetime | None = None
    blocks: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shard_command(index: str) -> str:
    """pg_prewarm of ``index``'s copy on one shard of chunks (``%s``: the shard, ``chunks_<id>``;
    its copy of the index is ``<index>_<id>``), for ``citus_sql.on_shards``."""
    return sql.SQL(
        "SELECT coalesce(sum(pg_prewarm(c.oid)), 0)::text FROM (SELECT '%s'::regclass AS shard) t "
        "JOIN pg_index i ON i.indrelid = t.shard JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = {} || '_' || substring(t.shard::text from '_([0-9]+)$')"
    ).format(sql.Literal(index)).as_string(None)


class Warmer:
    """Runs warm-ups on their own connections and remembers how each went (per process)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.states: dict[str, WarmState] = {}
        self._tasks: set[asyncio.Task[WarmState]] = set()
        self._running: dict[str, asyncio.Task[WarmState]] = {}

    def start(self, name: str) -> WarmState:
        """Warm ``name`` in the background (a warm-up already running for it is reused)."""
        if name not in self._running:
            self.states[name] = WarmState("warming", datetime.now(UTC))
            task = asyncio.create_task(self.warm(name), name=f"warm {name}")
            self._tasks.add(task)
            self._running[name] = task

            def forget(t: asyncio.Task[WarmState]) -> None:
                self._tasks.discard(t)
                self._running.pop(name, None)

            task.add_done_callback(forget)
        return self.states[name]

    async def warm(self, name: str) -> WarmState:
        state = self.states.get(name)
        if state is None or state.state != "warming":
            state = self.states[name] = WarmState("warming", datetime.now(UTC))
        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                if "chunks" in await citus_tables(conn):  # the index is a shell: warm each shard's copy
                    blocks = sum(int(r.value or 0) for r in await on_shards(conn, "chunks", _shard_command(name)))
                else:
                    cur = await conn.execute("SELECT pg_prewarm(%s::regclass)", (name,))
                    blocks = int((await cur.fetchone())[0])  # type: ignore[index]
        except psycopg.Error as e:
            state.state, state.error = "failed", str(e).strip()
            hint = " (is the pg_prewarm extension installed?)" if "pg_prewarm" in state.error else ""
            log.warning("warming index %s failed: %s%s", name, state.error, hint)
            return state
        state.state, state.blocks, state.warmed_at = "warm", blocks, datetime.now(UTC)
        log.info("index %s is warm (%d blocks loaded into shared buffers)", name, blocks)
        return state

    def forget(self, name: str) -> None:
        self.states.pop(name, None)

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
