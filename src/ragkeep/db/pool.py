"""A connection pool that fails fast while the database is down and recovers at once.

psycopg_pool, as configured by default, makes a request wait up to ``timeout`` (30 s) for a
connection while the database is unreachable, and retries lost connections with exponential
backoff (1, 2, 4, 8 ... s), so requests hung and throughput stayed at zero for 10-13 s after
PostgreSQL was back (issue 10, finding 6). Here:

- reconnection attempts back off from 0.1 s to at most ``MAX_RECONNECT_DELAY`` (0.5 s);
- once a connection attempt has failed, the pool counts the database as unavailable: waiting
  requests fail at once with :class:`DatabaseUnavailable`, new ones wait at most
  ``unavailable_wait`` seconds (then the same error), which the API answers with 503;
- when the database is reachable again, or a returned connection was broken, the idle
  connections are checked (one round trip each, once) so that no request gets a dead one.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

log = logging.getLogger(__name__)

MAX_RECONNECT_DELAY = 0.5


class DatabaseUnavailable(psycopg.OperationalError):
    """The database cannot be reached right now (the API answers 503 with Retry-After)."""


class _QuickBackoff(AttemptWithBackoff):
    INITIAL_DELAY = 0.1

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY)


class ResilientPool(AsyncConnectionPool):
    """``AsyncConnectionPool`` with fast failure during an outage and immediate recovery after."""

    def __init__(
        self, *args: Any, unavailable_wait: float = 0.5, what: str = "the database",
        meanwhile: str = "requests are answered 503 until it is back", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.unavailable_wait = unavailable_wait
        #: For the log: which server this pool reaches, and what happens while it is unreachable.
        self.what, self.meanwhile = what, meanwhile
        #: monotonic() of the first failed connection attempt of the current outage, else None.
        self.unavailable_since: float | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._recovering = False

    @property
    def available(self) -> bool:
        return self.unavailable_since is None

    async def getconn(self, timeout: float | None = None) -> Any:
        if self.unavailable_since is not None:
            timeout = min(self.timeout if timeout is None else timeout, self.unavailable_wait)
            try:
                return await super().getconn(timeout)
            except PoolTimeout as e:
                raise DatabaseUnavailable("the database is unavailable (reconnecting)") from e
        return await super().getconn(timeout)

    async def putconn(self, conn: Any) -> None:
        broken = conn.broken
        await super().putconn(conn)
        if broken:  # the server went away or restarted: its other connections are likely dead too
            self._sweep()

    def _sweep(self) -> None:
        if not self._closed and (self._sweeping is None or self._sweeping.done()):
            self._sweeping = asyncio.create_task(self._check_quietly(), name="pool sweep")

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool, and cancel and await a sweep still checking its connections (before,
        and after: a connection returned broken meanwhile starts one until the pool is closed)."""
        await self._stop_sweep()
        await super().close(timeout)
        await self._stop_sweep()

    async def _stop_sweep(self) -> None:
        sweeping, self._sweeping = self._sweeping, None
        if sweeping is not None and not sweeping.done():
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)

    async def _check_quietly(self) -> None:
        try:
            await self.check()
        except Exception as e:  # the pool may be closing
            log.debug("pool check failed: %s", e)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or _QuickBackoff(timeout=self.reconnect_timeout), growing)

    async def _connect(self, timeout: float | None = None) -> Any:
        try:
            conn = await super()._connect(timeout)
        except Exception as e:
            await self._unavailable(e)
            raise
        if self.unavailable_since is not None:
            await self._recovered()
        return conn

    async def _unavailable(self, error: Exception) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = monotonic()
            log.warning("%s is unreachable (%s); %s", self.what, error, self.meanwhile)
        failure = DatabaseUnavailable(f"the database is unavailable: {error}")
        async with self._lock:
            while self._waiting:
                await self._waiting.popleft().fail(failure)

    async def _recovered(self) -> None:
        since = self.unavailable_since
        if since is None or self._recovering:
            return
        self._recovering = True
        try:
            await self._check_quietly()  # idle connections from before the outage are dead: replace them
        finally:
            self._recovering = False
        self.unavailable_since = None
        log.warning("%s is reachable again after %.1f s", self.what, monotonic() - since)
