"""Reads on streaming standbys, with read-your-writes, and the primary whenever a standby will not do.

Searches and lists may run on a hot standby (``[database] read_urls``); every write runs on the
primary. Three rules keep that invisible to users:

- **Read-your-writes.** After a user's write commits, the primary's WAL position is recorded for
  that user (:func:`record_write`: one small UPSERT into the unlogged ``write_marks``). A read of
  that user goes to a standby only when the standby is known to have replayed past it, else to the
  primary. The position is in PostgreSQL, so this holds whichever ragkeep replica serves the read.
- **Bounded staleness for everyone else.** :class:`ReadRouter` checks every standby every
  ``replica_check_seconds``: a standby unreachable, promoted (no longer in recovery) or lagging
  more than ``max_replica_lag_seconds`` is out of rotation and its reads go to the primary.
- **No failed request.** A standby whose connection cannot be had at once is taken out and the
  read goes to the primary.

Lag is measured in time, from the primary's WAL position sampled at each check: a standby's lag is
how long ago the primary first had WAL the standby has not replayed (0 when it has replayed all).
That is what a reader sees (how old the newest data may be); ``now() - pg_last_xact_replay_timestamp()``
is not: it grows on an idle primary with nothing to replay.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from ragkeep.db.shared import SharedConnection

log = logging.getLogger(__name__)

# WAL positions are read as bytes from 0/0 (pg_lsn - '0/0' is numeric): comparable in Python.
_RECORD_WRITE = """
INSERT INTO write_marks (user_id, lsn) VALUES (%s, pg_current_wal_lsn())
ON CONFLICT (user_id) DO UPDATE SET lsn = GREATEST(write_marks.lsn, EXCLUDED.lsn), at = now()
RETURNING (lsn - '0/0'::pg_lsn)::bigint
"""
# Marks older than the lag bound are replayed by every standby in rotation: not worth routing on.
_WRITE_POSITION = """
SELECT (lsn - '0/0'::pg_lsn)::bigint FROM write_marks
WHERE user_id = %s AND at > now() - make_interval(secs => %s)
"""
_PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_STANDBY_STATE = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


class Connects(Protocol):
    """Where a unit of work takes a connection for one block (``SharedConnection`` and :class:`Reads`)."""

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]: ...


async def record_write(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> int:
    """Record that ``user_id``'s latest write is committed at the primary's current WAL position
    (call it after the write's commit, on the primary); returns that position."""
    cur = await conn.execute(_RECORD_WRITE, (user_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def write_position(conn: psycopg.AsyncConnection, user_id: uuid.UUID, within_seconds: float) -> int:
    """The WAL position a standby must have replayed to show ``user_id`` their own writes (0: any)."""
    cur = await conn.execute(_WRITE_POSITION, (user_id, within_seconds))
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def describe_url(url: str) -> str:
    """``host:port/db`` of a URL, without its password, for logs and /metrics."""
    info = conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


@dataclass
class Standby:
    """One standby: its pool, and what the last check found."""

    name: str
    pool: AsyncConnectionPool
    in_rotation: bool = False
    #: WAL bytes the standby had replayed at the last check.
    replayed: int = 0
    lag_seconds: float | None = None
    #: Why the standby is out of rotation ("" when in).
    reason: str = "not checked yet"
    reads: int = 0

    def take_out(self, reason: str) -> None:
        if self.in_rotation:
            log.warning("standby %s is out of rotation: %s; its reads go to the primary", self.name, reason)
        self.in_rotation, self.reason = False, reason

    def put_in(self) -> None:
        if not self.in_rotation:
            log.warning("standby %s is in rotation (lag %.2f s)", self.name, self.lag_seconds or 0.0)
        self.in_rotation, self.reason = True, ""


@dataclass
class _Samples:
    """The primary's WAL position over the last ``keep`` seconds: (monotonic time, bytes)."""

    keep: float
    points: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, at: float, position: int) -> None:
        if not self.points or position != self.points[-1][1]:
            self.points.append((at, position))
        while len(self.points) > 1 and self.points[1][0] < at - self.keep:
            self.points.popleft()

    def lag(self, replayed: int, now: float) -> float:
        """How long ago the primary first had WAL past ``replayed`` (0 if it has none)."""
        for at, position in self.points:
            if position > replayed:
                return now - at
        return 0.0


class ReadRouter:
    """Chooses where each read runs: a standby in rotation that has replayed far enough, else the primary."""

    def __init__(
        self,
        primary: AsyncConnectionPool,
        standbys: Sequence[Standby],
        *,
        max_lag_seconds: float,
        check_seconds: float,
    ) -> None:
        self.primary = primary
        self.standbys = list(standbys)
        self.max_lag = max_lag_seconds
        self.check_seconds = check_seconds
        self.primary_reads = 0
        self._samples = _Samples(keep=max_lag_seconds * 2 + 10 * check_seconds)
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.standbys)

    async def start(self) -> None:
        """Open the standbys' pools (without waiting for them) and check them once, then on a timer.
        Nothing to do without standbys: every read is on the primary and no write is recorded."""
        if not self.enabled:
            return
        for s in self.standbys:
            await s.pool.open(wait=False)
        await self.check()
        self._task = asyncio.create_task(self._run(), name="standby checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(s.pool.close() for s in self.standbys), return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:  # the primary down: its own 503s say so; keep checking
                log.debug("standby check failed", exc_info=True)

    async def check(self) -> None:
        """Sample the primary's position, then each standby's: rotation decided from both."""
        async with self.primary.connection(timeout=self.check_seconds * 2) as conn:
            cur = await conn.execute(_PRIMARY_POSITION)
            row = await cur.fetchone()
        primary_at = int(row[0]) if row else 0
        self._samples.add(time.monotonic(), primary_at)
        await asyncio.gather(*(self._check_standby(s) for s in self.standbys))

    async def _check_standby(self, standby: Standby) -> None:
        try:
            async with standby.pool.connection(timeout=max(self.check_seconds, 1.0)) as conn:
                cur = await conn.execute(_STANDBY_STATE)
                row = await cur.fetchone()
        except Exception as e:  # unreachable, restarting, pool timeout
            standby.take_out(f"unreachable ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})")
            return
        in_recovery, replayed = (bool(row[0]), int(row[1] or 0)) if row else (False, 0)
        if not in_recovery:
            standby.take_out("not in recovery (promoted, or a primary): its data may have diverged")
            return
        standby.replayed = max(standby.replayed, replayed)
        standby.lag_seconds = self._samples.lag(replayed, time.monotonic())
        if standby.lag_seconds > self.max_lag:
            standby.take_out(f"lagging {standby.lag_seconds:.1f} s (max_replica_lag_seconds = {self.max_lag:g})")
        else:
            standby.put_in()

    def choose(self, needed: int) -> Standby | None:
        """A standby in rotation that has replayed ``needed`` WAL bytes, in turn; None: the primary."""
        ready = [s for s in self.standbys if s.in_rotation and s.replayed >= needed]
        if not ready:
            return None
        return ready[next(self._turn) % len(ready)]

    @asynccontextmanager
    async def on_standby(self, standby: Standby) -> AsyncIterator[psycopg.AsyncConnection | None]:
        """A connection of ``standby`` committed at the block's end; None when one cannot be had at
        once (the standby is taken out: the caller reads on the primary instead)."""
        try:
            conn = await standby.pool.getconn(timeout=min(self.check_seconds, 0.5))
        except Exception as e:
            if not getattr(standby.pool, "available", True):  # unreachable, not just busy
                standby.take_out(f"no connection ({type(e).__name__})")
            yield None
            return
        try:
            async with conn:  # commit, or roll back on an error, as pool.connection() does
                standby.reads += 1
                yield conn
        except psycopg.OperationalError as e:
            if conn.broken:  # the standby went away mid-read: out until the next check says otherwise
                standby.take_out(f"connection lost ({type(e).__name__})")
            raise
        finally:
            await standby.pool.putconn(conn)


class Reads:
    """The read connections of one request of one user: a standby when it shows the user's own
    writes, else the request's primary connection (``primary``). The primary connection is given
    back before a read on a standby: a request holds one connection at a time."""

    def __init__(self, router: ReadRouter, primary: SharedConnection, user_id: uuid.UUID | None) -> None:
        self.router = router
        self.primary = primary
        self.user_id = user_id
        self._needed: int | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self._needed is None:
            self._needed = 0
            if self.user_id is not None:
                async with self.primary.connection() as conn:
                    self._needed = await write_position(conn, self.user_id, self.router.max_lag * 2)
        standby = self.router.choose(self._needed)
        if standby is not None:
            await self.primary.release()
            async with self.router.on_standby(standby) as conn:
                if conn is not None:
                    yield conn
                    return
        self.router.primary_reads += 1
        async with self.primary.connection() as conn:
            yield conn


def standby(url: str, make_pool: Callable[[str], AsyncConnectionPool]) -> Standby:
    """A :class:`Standby` of ``url``, its pool made (unopened) by ``make_pool(conninfo)``."""
    return Standby(name=describe_url(url), pool=make_pool(make_conninfo(url, application_name="ragkeep-read")))
