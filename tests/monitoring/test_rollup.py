"""Keeping the metrics bounded: hourly rows roll up into daily rows, old ones expire, snapshots thin.

No server here: the recorders, the roll-up and the stats queries run against a migrated database
of their own, with fixed clocks, so that every figure is known exactly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ragkeep.config import MetricsConfig
from ragkeep.db.database import prepare_schema
from ragkeep.monitoring import housekeeping, stats
from ragkeep.monitoring.activity import ActivityRecorder, Caller
from ragkeep.monitoring.searches import SearchRecorder, latency_bucket
from tests.monitoring.conftest import query
from tests.support import create_database, drop_database

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
CONFIG = MetricsConfig(hourly_retention_days=8, daily_retention_days=10)
CUTOFF = datetime(2026, 3, 12, tzinfo=UTC)  # NOW's midnight - 8 days
A, B = uuid.UUID(int=1), uuid.UUID(int=2)


@pytest.fixture(scope="module")
def url(pg_url: str) -> Iterator[str]:
    url = create_database(pg_url, "rollup")
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    yield url
    drop_database(pg_url, url)


def run(url: str, work: Any) -> Any:
    async def go() -> Any:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, open=False) as pool:
            return await work(pool)

    return asyncio.run(go())


def seed(url: str) -> None:
    """A's searches and requests over three days around the cutoff, B's on one of them."""

    async def work(pool: AsyncConnectionPool) -> None:
        searches, requests = SearchRecorder(pool), ActivityRecorder(pool)
        for user, at, ms, scope in (
            (A, datetime(2026, 3, 10, 3, 10, tzinfo=UTC), 3.0, 1000),
            (A, datetime(2026, 3, 10, 3, 50, tzinfo=UTC), 40.0, 1000),
            (A, datetime(2026, 3, 10, 15, 0, tzinfo=UTC), 700.0, 3000),
            (A, datetime(2026, 3, 11, 23, 59, tzinfo=UTC), 8.0, 3000),
            (A, datetime(2026, 3, 12, 0, 30, tzinfo=UTC), 9.0, 3000),  # after the cutoff: stays hourly
            (B, datetime(2026, 3, 10, 9, 0, tzinfo=UTC), 4000.0, 50_000),
        ):
            searches.record(user_id=user, kind="semantic", strategy="exact", scope_size=scope, cross_user=False,
                            total_ms=ms, db_ms=ms / 2, at=at)
            requests.record(method="POST", route="/v3/retrieval/search", status=200, ms=ms + 1,
                            caller=Caller(user_id=user), at=at)
        requests.record(method="GET", route="/v3/documents/{document_id}", status=404, ms=2.0,
                        caller=Caller(user_id=A), at=datetime(2026, 3, 10, 3, 20, tzinfo=UTC))
        await searches.flush()
        await requests.flush()

    run(url, work)


def figures(url: str) -> dict[str, Any]:
    """What the stats routes would answer over a window covering all of it."""
    since = datetime(2026, 3, 9, tzinfo=UTC)

    async def work(pool: AsyncConnectionPool) -> dict[str, Any]:
        async with pool.connection() as conn:
            s = await stats.search_stats(conn, since, 10)
            r = await stats.request_stats(conn, since)
            a = await stats.active_users(conn, since)
            u = await stats.search_stats(conn, since, 0, A)
        for d in (s, u):
            d.pop("by_hour_of_day"), d.pop("peak_hour")  # hour of day: hourly rows only, by design
        for key in ("by_hour_of_day", "peak_hour"):
            r.pop(key)
        for route in r["routes"]:
            route.pop("peak_hour")
        return {"searches": s, "requests": r, "per_day": a["per_day"], "window": a["window"], "user": u}

    return run(url, work)


def test_roll_up_moves_old_hours_into_days_and_keeps_every_figure(url: str) -> None:
    seed(url)
    before = figures(url)
    assert before["searches"]["searches"] == 6 and before["user"]["searches"] == 5

    async def roll(pool: AsyncConnectionPool) -> dict[str, int]:
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            return await housekeeping.roll_up(conn, CONFIG, NOW)

    moved = run(url, roll)
    assert moved["search_activity"] == 4  # (03-10, A) in two scope buckets, (03-10, B), (03-11, A)

    # Only the hour after the cutoff is still hourly; the days hold the sums and the histograms.
    assert query(url, "SELECT hour, searches FROM search_activity") == [(datetime(2026, 3, 12, tzinfo=UTC), 1)]
    days = {(r[0].day, r[1]): r[2:] for r in query(
        url, "SELECT day, user_id, sum(searches), sum(vectors), sum(total_ms), max(max_ms), "
             "ragkeep_hist_sum(latency_hist) FROM search_activity_daily GROUP BY 1, 2")}
    searches, vectors, total, mx, hist = days[(10, A)]
    assert (searches, vectors, total, mx) == (3, 5000, 743.0, 700.0)
    assert sum(hist) == 3 and hist[latency_bucket(3.0)] == 1 and hist[latency_bucket(40.0)] == 1
    assert hist[latency_bucket(700.0)] == 1
    assert days[(11, A)][0] == 1 and days[(10, B)][0] == 1
    users = {
        (r[0].day, r[1]): (r[2], r[3], r[4])
        for r in query(url, "SELECT day, user_id, requests, errors, active_hours FROM user_activity_daily")
    }
    assert users[(10, A)] == (4, 1, 2)  # hours 03 (3 requests, one 404) and 15
    assert query(url, "SELECT count(*) FROM request_activity WHERE hour < %s", (CUTOFF,)) == [(0,)]

    # Every figure the API reports over the window is the same after the roll-up.
    assert figures(url) == before

    # Running it again moves nothing and changes nothing.
    assert run(url, roll) == {"search_activity": 0, "request_activity": 0, "user_activity": 0, "expired_daily": 0}
    assert figures(url) == before

    # Later, daily rows past daily_retention_days expire (and the 03-12 hour has rolled up).
    async def later(pool: AsyncConnectionPool) -> dict[str, int]:
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            return await housekeeping.roll_up(conn, CONFIG, NOW + timedelta(days=2))  # daily cutoff: 03-12

    moved = run(url, later)
    assert moved["search_activity"] == 1 and moved["expired_daily"] > 0
    assert query(url, "SELECT count(*) FROM search_activity") == [(0,)]
    assert query(url, "SELECT day, searches FROM search_activity_daily") == [(datetime(2026, 3, 12, tzinfo=UTC), 1)]
    assert query(url, "SELECT min(day) FROM user_activity_daily") == [(datetime(2026, 3, 12, tzinfo=UTC),)]


def test_one_replica_claims_each_snapshot_slot(url: str) -> None:
    at = datetime.now(UTC) + timedelta(days=1)  # a slot nobody else uses

    async def race(pool: AsyncConnectionPool) -> list[housekeeping.HousekeepingResult]:
        async def one() -> housekeeping.HousekeepingResult:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                return await housekeeping.run_slot(conn, CONFIG, at)

        return list(await asyncio.gather(one(), one(), one()))

    results = run(url, race)
    assert sorted(r.claimed for r in results) == [False, False, True]
    slot = housekeeping.slot_of(at, CONFIG.snapshot_minutes)
    assert {r.slot for r in results} == {slot} and slot.minute % 10 == 0 and slot.second == 0
    sizes = dict(query(url, "SELECT relation, bytes FROM storage_sizes WHERE taken_at = %s", (slot,)))
    claimed = next(r for r in results if r.claimed)
    assert len(sizes) == claimed.relations and sizes["chunks"] > 0 and sizes["chunks_pkey"] > 0
    assert "search_activity_daily" in sizes and "storage_sizes" in sizes
    # The next slot is another snapshot.
    nxt = run(url, lambda pool: _slot(url, at + timedelta(minutes=CONFIG.snapshot_minutes)))
    assert nxt.claimed and nxt.slot == slot + timedelta(minutes=10)


async def _slot(url: str, at: datetime) -> housekeeping.HousekeepingResult:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await housekeeping.run_slot(conn, CONFIG, at)


def test_old_snapshots_thin_to_one_a_day_then_expire(url: str) -> None:
    config = MetricsConfig(storage_detail_days=7, storage_retention_days=30)
    now = datetime(2030, 6, 30, 12, tzinfo=UTC)
    taken = [
        datetime(2030, 5, 1, 0, 0, tzinfo=UTC),   # past retention: gone
        datetime(2030, 6, 10, 0, 10, tzinfo=UTC),  # first of its day: kept
        datetime(2030, 6, 10, 0, 20, tzinfo=UTC),
        datetime(2030, 6, 10, 23, 50, tzinfo=UTC),
        datetime(2030, 6, 11, 5, 0, tzinfo=UTC),   # first of its day: kept
        datetime(2030, 6, 28, 0, 10, tzinfo=UTC),  # inside the detail window: all kept
        datetime(2030, 6, 28, 0, 20, tzinfo=UTC),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for t in taken:
            conn.execute("INSERT INTO storage_snapshots (taken_at, replica) VALUES (%s, 'test')", (t,))
            conn.execute("INSERT INTO storage_sizes (taken_at, relation, kind, table_name, bytes) "
                         "VALUES (%s, 'chunks', 'table', 'chunks', 8192)", (t,))

    async def thin(pool: AsyncConnectionPool) -> int:
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            return await housekeeping.thin_snapshots(conn, config, now)

    assert run(url, thin) >= 3  # (and the snapshots other tests took here, all older than `now`)
    left = [r[0] for r in query(url, "SELECT taken_at FROM storage_snapshots WHERE replica = 'test' ORDER BY 1")]
    assert left == [taken[1], taken[4], taken[5], taken[6]]
    assert query(url, "SELECT count(*) FROM storage_sizes WHERE taken_at = ANY(%s)", (taken[2:4],)) == [(0,)]


def test_slots_are_aligned_to_midnight() -> None:
    at = datetime(2026, 1, 2, 13, 47, 31, tzinfo=UTC)
    assert housekeeping.slot_of(at, 10) == datetime(2026, 1, 2, 13, 40, tzinfo=UTC)
    seven = datetime(2026, 1, 2, 13, 47, tzinfo=UTC) - timedelta(minutes=(13 * 60 + 47) % 7)
    assert housekeeping.slot_of(at, 7) == seven
    assert housekeeping.slot_of(at, 1440) == datetime(2026, 1, 2, tzinfo=UTC)
