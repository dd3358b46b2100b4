"""What recent searches looked like, read back from ``search_activity`` (written by
:mod:`ragkeep.monitoring.searches`): searches per scope size and strategy with latency percentiles,
the cross-user share, searches per hour of the day and so the quietest hour.

The index advice (``ragkeep.indices.advice``) and automatic promotion (its build hour) read these;
they are handed the figures, so ``indices`` knows nothing of the metrics tables.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ragkeep.monitoring.searches import bucket_range, hist_percentile

#: Days of search activity read by default (the index advice's window).
WINDOW_DAYS = 7

_BY_SCOPE = """
WITH recent AS (
    SELECT * FROM search_activity
    WHERE hour >= now() - make_interval(days => %(days)s) AND kind <> 'full_text'
), buckets AS (
    SELECT scope_bucket, strategy, i, sum(x)::bigint AS n
    FROM recent, unnest(latency_hist) WITH ORDINALITY AS t(x, i) GROUP BY 1, 2, 3
), hists AS (
    SELECT scope_bucket, strategy, array_agg(n ORDER BY i) AS hist FROM buckets GROUP BY 1, 2
)
SELECT r.scope_bucket, r.strategy, sum(r.searches)::bigint AS searches, sum(r.total_ms) AS total_ms,
       sum(r.db_ms) AS db_ms, sum(r.vectors)::bigint AS vectors, max(r.max_ms) AS max_ms, h.hist
FROM recent r JOIN hists h USING (scope_bucket, strategy)
GROUP BY r.scope_bucket, r.strategy, h.hist ORDER BY r.scope_bucket, r.strategy
"""
_TRAFFIC = """
SELECT coalesce(sum(searches), 0)::bigint AS searches,
       coalesce(sum(searches) FILTER (WHERE cross_user), 0)::bigint AS cross_user
FROM search_activity WHERE hour >= now() - make_interval(days => %(days)s)
"""
_BY_HOUR = """
SELECT extract(hour FROM hour AT TIME ZONE 'UTC')::int AS h, sum(searches)::bigint AS n
FROM search_activity WHERE hour >= now() - make_interval(days => %(days)s) GROUP BY 1
"""

#: The users with the most searches of their own data (not cross-user): a power user's query rate.
_BY_USER = """
SELECT user_id, sum(searches)::bigint AS n
FROM search_activity WHERE hour >= now() - make_interval(days => %(days)s) AND NOT cross_user
GROUP BY 1 ORDER BY n DESC, user_id LIMIT %(limit)s
"""
#: How many of the busiest users :func:`search_traffic` reads.
TOP_USERS = 20


def off_peak_hour(by_hour: dict[int, int]) -> int:
    """The UTC hour with the fewest searches; 03:00 when nothing was observed (ties: earliest)."""
    if not by_hour:
        return 3
    return min(range(24), key=lambda h: (by_hour.get(h, 0), h))


@dataclass(frozen=True)
class SearchTraffic:
    """The last ``days`` of searches, summed over every replica."""

    days: int
    searches: int
    cross_user: int
    #: Searches per UTC hour of the day (hours without any are absent).
    by_hour: dict[int, int]
    #: Per scope-size bucket and strategy: searches, mean and percentile latencies.
    by_scope: list[dict[str, Any]]
    #: Database time and vectors of the exact scans (their cost per vector).
    exact_ms: float
    exact_vectors: int
    #: The busiest users by searches of their own data (pinned, not cross-user), most first.
    by_user: list[tuple[uuid.UUID, int]] = field(default_factory=list)

    def off_peak_hour(self) -> int:
        return off_peak_hour(self.by_hour)


async def _rows(conn: psycopg.AsyncConnection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def searches_by_hour(conn: psycopg.AsyncConnection, days: int = WINDOW_DAYS) -> dict[int, int]:
    return {r["h"]: r["n"] for r in await _rows(conn, _BY_HOUR, {"days": days})}


async def observed_off_peak_hour(conn: psycopg.AsyncConnection) -> int:
    """The quietest UTC hour of the last :data:`WINDOW_DAYS` (automatic promotion builds then)."""
    return off_peak_hour(await searches_by_hour(conn))


async def search_traffic(conn: psycopg.AsyncConnection, days: int = WINDOW_DAYS) -> SearchTraffic:
    params = {"days": days}
    traffic = (await _rows(conn, _TRAFFIC, params))[0]
    by_hour = await searches_by_hour(conn, days)
    by_scope = []
    exact_ms, exact_vectors = 0.0, 0
    for r in await _rows(conn, _BY_SCOPE, params):
        lo, hi = bucket_range(r["scope_bucket"])
        hist = r["hist"] or []
        by_scope.append({
            "scope_vectors": [lo, hi], "strategy": r["strategy"], "searches": r["searches"],
            "mean_ms": r["total_ms"] / r["searches"], "mean_db_ms": r["db_ms"] / r["searches"],
            "p50_ms": hist_percentile(hist, 0.5, r["max_ms"]), "p95_ms": hist_percentile(hist, 0.95, r["max_ms"]),
            "max_ms": r["max_ms"],
        })
        if r["strategy"] == "exact":
            exact_ms += r["db_ms"]
            exact_vectors += r["vectors"]
    by_user = [(r["user_id"], r["n"]) for r in await _rows(conn, _BY_USER, {"days": days, "limit": TOP_USERS})]
    return SearchTraffic(days, traffic["searches"], traffic["cross_user"], by_hour, by_scope, exact_ms, exact_vectors,
                         by_user)
