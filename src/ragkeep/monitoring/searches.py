"""Search activity, aggregated in memory and flushed to ``search_activity`` every few seconds.

One row per (hour, user, kind, strategy, scope-size bucket, cross-user) keeps the table bounded by
traffic shape rather than by query count, and sums from every replica land on the same rows, so
all replicas report the same figures. A search never waits for this write.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

#: Upper bounds (ms) of the latency histogram's buckets; one more bucket holds everything slower.
LATENCY_BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

_UPSERT = """
INSERT INTO search_activity AS a (hour, user_id, kind, strategy, scope_bucket, cross_user, searches,
    short_results, fallbacks, vectors, total_ms, db_ms, max_ms, latency_hist)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (hour, user_id, kind, strategy, scope_bucket, cross_user) DO UPDATE SET
    searches = a.searches + excluded.searches,
    short_results = a.short_results + excluded.short_results,
    fallbacks = a.fallbacks + excluded.fallbacks,
    vectors = a.vectors + excluded.vectors,
    total_ms = a.total_ms + excluded.total_ms,
    db_ms = a.db_ms + excluded.db_ms,
    max_ms = greatest(a.max_ms, excluded.max_ms),
    latency_hist = ragkeep_hist_add(a.latency_hist, excluded.latency_hist)
"""


def scope_bucket(size: int) -> int:
    """log2 bucket: b holds sizes in [2**(b-1), 2**b); 0 holds an empty scope."""
    return max(size, 0).bit_length()


def bucket_range(bucket: int) -> tuple[int, int]:
    return (0, 0) if bucket == 0 else (2 ** (bucket - 1), 2**bucket - 1)


def latency_bucket(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


def hist_percentile(hist: Sequence[int], q: float, max_ms: float | None = None) -> float | None:
    """The q-quantile of a latency histogram: the upper bound of the bucket that holds it.

    An upper bound, never an interpolation: "p95 <= 20 ms" is what the buckets can prove. In the
    last (unbounded) bucket the answer is ``max_ms``, the slowest search seen, when it is known.
    None for an empty histogram.
    """
    total = sum(hist)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= q * total:
            bound = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else None
            if max_ms is not None and (bound is None or max_ms < bound):
                return max_ms  # the slowest one seen is a tighter bound than the bucket's
            return bound
    return max_ms


#: Called with (kind, strategy, total_ms, scope_size, short, fallback) for each search recorded:
#: the Prometheus histograms (ragkeep.monitoring.prom.ProcessMetrics.observe_search).
SearchObserver = Callable[[str, str, float, int, bool, bool], None]


@dataclass
class _Cell:
    searches: int = 0
    short_results: int = 0
    fallbacks: int = 0
    vectors: int = 0
    total_ms: float = 0.0
    db_ms: float = 0.0
    max_ms: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))


_Key = tuple[datetime, uuid.UUID, str, str, int, bool]


class SearchRecorder:
    def __init__(
        self, pool: AsyncConnectionPool, flush_seconds: float = 5.0, observer: SearchObserver | None = None
    ) -> None:
        self.pool = pool
        self.flush_seconds = flush_seconds
        self.observer = observer
        self._cells: dict[_Key, _Cell] = {}
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        *,
        user_id: uuid.UUID,
        kind: str,
        strategy: str,
        scope_size: int,
        cross_user: bool,
        total_ms: float,
        db_ms: float,
        short: bool = False,
        fallback: bool = False,
        at: datetime | None = None,
    ) -> None:
        hour = (at or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
        one = _Cell(1, int(short), int(fallback), max(scope_size, 0), total_ms, db_ms, total_ms)
        one.hist[latency_bucket(total_ms)] = 1
        if self.observer is not None:
            self.observer(kind, strategy, total_ms, scope_size, short, fallback)
        self._merge((hour, user_id, kind, strategy, scope_bucket(scope_size), cross_user), one)

    async def flush(self) -> int:
        """Write what was recorded since the last flush; on failure keep it for the next one."""
        cells, self._cells = self._cells, {}
        if not cells:
            return 0
        rows = [
            (*key, c.searches, c.short_results, c.fallbacks, c.vectors, c.total_ms, c.db_ms, c.max_ms, c.hist)
            for key, c in sorted(cells.items(), key=lambda kv: kv[0])  # one lock order across replicas
        ]
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(_UPSERT, rows)
        except Exception:
            for key, c in cells.items():  # merge back what arrived meanwhile
                self._merge(key, c)
            raise
        return len(rows)

    def _merge(self, key: _Key, c: _Cell) -> None:
        cur = self._cells.setdefault(key, _Cell())
        cur.searches += c.searches
        cur.short_results += c.short_results
        cur.fallbacks += c.fallbacks
        cur.vectors += c.vectors
        cur.total_ms += c.total_ms
        cur.db_ms += c.db_ms
        cur.max_ms = max(cur.max_ms, c.max_ms)
        cur.hist = [a + b for a, b in zip(cur.hist, c.hist, strict=True)]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception as e:  # the database may be restarting; keep the figures, try again
                log.warning("could not write search activity (%s); will retry in %.0f s", e, self.flush_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="search activity")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        except Exception as e:
            log.warning("search activity of the last %.0f s was not written: %s", self.flush_seconds, e)
