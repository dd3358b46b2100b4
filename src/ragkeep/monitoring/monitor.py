"""The monitoring of one server process: Prometheus metrics, request activity, heartbeats, snapshots.

Built once in the app's lifespan. Two background tasks:

- every ``[metrics] flush_seconds``: write the request activity and this process's memory/CPU row;
- every ``snapshot_minutes`` (aligned to the slot grid): try to claim the slot's storage snapshot
  and, if this replica won it, run the roll-ups (:mod:`.housekeeping`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from ragkeep.auth.tokens import TokenIssuer
from ragkeep.config import MetricsConfig
from ragkeep.db.reads import ReadRouter
from ragkeep.db.replica import replica_name
from ragkeep.monitoring import housekeeping
from ragkeep.monitoring.activity import ActivityRecorder
from ragkeep.monitoring.exposition import render
from ragkeep.monitoring.instance import InstanceProbe, write_sample
from ragkeep.monitoring.prom import ProcessMetrics

log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, config: MetricsConfig, pool: AsyncConnectionPool, url: str, tokens: TokenIssuer | None) -> None:
        self.config = config
        self.pool = pool
        self.url = url
        #: Verifies bearer tokens to tell who made a request (signature only; no database).
        self.tokens = tokens
        self.metrics = ProcessMetrics()
        self.activity = ActivityRecorder(pool)
        self.probe = InstanceProbe()
        #: The read router, for its standbys' figures in /metrics (set by the app; None: no standbys).
        self.reads: ReadRouter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="metrics flush"),
            asyncio.create_task(self._housekeeping_loop(), name="metrics housekeeping"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self.flush()
        except Exception as e:
            log.warning("request activity of the last %.0f s was not written: %s", self.config.flush_seconds, e)

    # -- work --------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the request activity and this process's memory/CPU row now."""
        await self.activity.flush()
        sample = self.probe.sample()
        async with self.pool.connection() as conn:
            await write_sample(conn, sample)

    async def housekeeping(self, now: datetime | None = None) -> housekeeping.HousekeepingResult:
        """Claim the current snapshot slot and, if won, snapshot and roll up (own connection:
        the roll-ups are several transactions and need no pool slot held meanwhile)."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            result = await housekeeping.run_slot(conn, self.config, now)
        if result.claimed:
            log.info("metrics slot %s: snapshot of %d relations, roll-up %s, %d old snapshots removed",
                     result.slot.isoformat(), result.relations, result.rolled_up, result.snapshots_removed)
        return result

    async def render(self) -> bytes:
        return await render(self.metrics, self.probe, self.pool, replica_name(), self.reads)

    # -- loops -------------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        seconds = self.config.flush_seconds
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.flush()
            except Exception as e:  # keep the figures; the database may be restarting
                log.warning("could not write request activity (%s); will retry in %.0f s", e, seconds)

    async def _housekeeping_loop(self) -> None:
        minutes = self.config.snapshot_minutes
        while True:
            try:
                await self.housekeeping()
            except Exception as e:
                log.warning("metrics snapshot/roll-up failed (%s); next slot in %d min", e, minutes)
            now = datetime.now(UTC)
            next_slot = housekeeping.slot_of(now, minutes) + timedelta(minutes=minutes)
            await asyncio.sleep(max((next_slot - now).total_seconds(), 0.0) + 0.5)
