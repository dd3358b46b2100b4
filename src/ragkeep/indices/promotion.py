"""Automatic tenant promotion: users whose vector count passes ``[indices] auto_promote_threshold``
get their own partial HNSW index, built in the configured (or the observed off-peak) hour.

Every replica runs the check; a PostgreSQL advisory lock lets one act at a time, and at most one
vector index build runs at once (a build takes the cores it is given for minutes), so the next
candidate waits for the next check. A build in progress is registered in ``tenant_indexes`` and
visible in ``pg_stat_progress_create_index``, which is how the other replicas know.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg

from ragkeep.config import Settings
from ragkeep.indices.build import IndexBuilder, IndexSpec

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises promotions across replicas.
LOCK_KEY = 0x72_6B_70_72  # "rkpr"
CHECK_SECONDS = 300.0

_CANDIDATES = """
SELECT s.owner_id FROM owner_stats s
WHERE s.chunk_count > %s
  AND NOT EXISTS (SELECT 1 FROM tenant_indexes t JOIN pg_class ic ON ic.relname = t.index_name
                  WHERE t.owner_id = s.owner_id)
ORDER BY s.chunk_count DESC
"""
_BUILDING = """
SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p JOIN pg_class tc ON tc.oid = p.relid
               WHERE tc.relname = 'chunks' AND tc.relnamespace = current_schema()::regnamespace)
"""


#: The UTC hour with the least search traffic, read on the given connection
#: (``ragkeep.monitoring.traffic.observed_off_peak_hour``).
QuietHour = Callable[[psycopg.AsyncConnection], Awaitable[int]]


class AutoPromoter:
    def __init__(self, settings: Settings, builder: IndexBuilder, quiet_hour: QuietHour) -> None:
        self.settings = settings
        self.builder = builder
        #: Asked when ``[indices] auto_promote_hour`` is not set.
        self.quiet_hour = quiet_hour
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, now: datetime | None = None) -> uuid.UUID | None:
        """Start one promotion if one is due now; returns the promoted owner."""
        threshold = self.settings.indices.auto_promote_threshold
        if threshold is None:
            return None
        now = now or datetime.now(UTC)
        async with await psycopg.AsyncConnection.connect(self.builder.url, autocommit=True) as conn:
            hour = self.settings.indices.auto_promote_hour
            if hour is None:
                hour = await self.quiet_hour(conn)
            if now.hour != hour:
                return None
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            if not (await cur.fetchone())[0]:  # type: ignore[index]
                return None
            try:
                if (await (await conn.execute(_BUILDING)).fetchone())[0]:  # type: ignore[index]
                    return None
                row = await (await conn.execute(_CANDIDATES, (threshold,))).fetchone()
                if row is None:
                    return None
                owner: uuid.UUID = row[0]
                spec = IndexSpec("hnsw", "cosine_distance", owner_id=owner).validated(now)
                log.info("promoting user %s (more than %d vectors) to its own index %s", owner, threshold, spec.name)
                await self.builder.start(spec)  # returns once registered and visible to other replicas
                return owner
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as e:  # a failed check must not stop the next one
                log.warning("automatic promotion check failed: %s; retrying in %.0f s", e, CHECK_SECONDS)
            await asyncio.sleep(CHECK_SECONDS)

    def start(self) -> None:
        if self.settings.indices.auto_promote_threshold is not None:
            self._task = asyncio.create_task(self._loop(), name="auto promotion")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
