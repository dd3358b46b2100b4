"""One pooled connection shared by the steps of a unit of work: an API request's credentials
check, its rate limit and its route take one connection from the pool instead of one each.

The connection is checked out at first use (a request that never touches the database takes
none) and kept until :meth:`SharedConnection.release`. Each ``async with shared.connection()``
block behaves as ``pool.connection()`` did at its end: commit, or roll back on an error, so the
next step starts outside any transaction (its isolation, ``SET LOCAL`` and locks are its own). A
block opened while another one is open (nested, or concurrent in one task group) gets a connection
of its own from the pool, as before, so no block commits another's work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg_pool import AsyncConnectionPool


class SharedConnection:
    """A lazily checked-out connection of ``pool``, for one unit of work (one request)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._conn: psycopg.AsyncConnection | None = None
        self._busy = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """The shared connection for one block, committed at its end (rolled back on an error)."""
        if self._busy:
            async with self.pool.connection() as conn:
                yield conn
            return
        if self._conn is None:
            self._conn = await self.pool.getconn()
        conn = self._conn
        self._busy = True
        try:
            async with conn:  # a pooled connection is not closed here, only committed or rolled back
                yield conn
        finally:
            self._busy = False
            if conn.closed or conn.broken:  # give it back now: the next block takes a fresh one
                await self.release()

    async def release(self) -> None:
        """Return the connection to the pool (a later block checks one out again). Before work
        that takes connections of its own (ingestion, index builds), so a request does not hold an
        idle one meanwhile; and when the unit of work ends."""
        if self._busy:
            raise RuntimeError("release() inside a connection() block")
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)
