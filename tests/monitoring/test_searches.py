"""Search activity: every search through the API is counted, per user, kind, strategy and scope
size, in PostgreSQL, with sums that add up across flushes (and so across replicas)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from ragkeep.monitoring.searches import LATENCY_BOUNDS_MS, SearchRecorder, bucket_range, latency_bucket, scope_bucket


def test_buckets() -> None:
    assert [scope_bucket(n) for n in (0, 1, 2, 3, 4, 1023, 1024)] == [0, 1, 2, 2, 3, 10, 11]
    assert bucket_range(11) == (1024, 2047) and bucket_range(0) == (0, 0)
    assert latency_bucket(0.3) == 0 and latency_bucket(1.5) == 1 and latency_bucket(10**6) == len(LATENCY_BOUNDS_MS)


def test_two_recorders_add_up_on_the_same_rows(settings, make_user) -> None:
    """Two recorders stand for two replicas: their flushes sum, histograms element-wise."""
    user = make_user("activity")
    # Recent: hours older than [metrics] hourly_retention_days roll up into daily rows.
    at = datetime.now(UTC).replace(minute=40, second=0, microsecond=0) - timedelta(hours=1)

    async def go() -> None:
        async with AsyncConnectionPool(settings.database.url, min_size=1, max_size=2, open=False) as pool:
            a, b = SearchRecorder(pool), SearchRecorder(pool)
            for rec, ms in ((a, 3.0), (a, 40.0), (b, 3.5)):
                rec.record(user_id=user.id, kind="semantic", strategy="exact", scope_size=1500, cross_user=False,
                           total_ms=ms, db_ms=ms / 2, at=at)
            assert await a.flush() == 1 and await b.flush() == 1 and await a.flush() == 0

    asyncio.run(go())
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            "SELECT hour, searches, vectors, total_ms, db_ms, max_ms, latency_hist, scope_bucket FROM search_activity"
            " WHERE user_id = %s", (user.id,)).fetchone()
    hour, searches, vectors, total, db, mx, hist, bucket = row
    assert hour == at.replace(minute=0) and searches == 3 and vectors == 4500
    assert (total, db, mx) == (46.5, 23.25, 40.0) and bucket == scope_bucket(1500)
    assert hist[latency_bucket(3.0)] == 2 and hist[latency_bucket(40.0)] == 1 and sum(hist) == 3


def test_api_searches_are_recorded_with_their_plan(make_user, settings) -> None:
    user = make_user("activity-api")
    r = user.client.post("/v3/documents", data={"raw_text": "Rivers carry water to the sea. " * 20})
    assert r.status_code == 201, r.text
    for settings_ in ({}, {}, {"use_fulltext_search": True, "use_semantic_search": False}):
        r = user.client.post("/v3/retrieval/search", json={"query": "water", "search_settings": settings_})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20  # the recorder flushes every 5 s
    rows: list = []
    while time.monotonic() < deadline:
        with psycopg.connect(settings.database.url) as conn:
            rows = conn.execute(
                "SELECT kind, strategy, searches, vectors, cross_user FROM search_activity WHERE user_id = %s"
                " ORDER BY kind", (user.id,)).fetchall()
        if sum(r[2] for r in rows) == 3:
            break
        time.sleep(0.5)
    with psycopg.connect(settings.database.url) as conn:
        chunks = conn.execute("SELECT chunk_count FROM owner_stats WHERE owner_id = %s", (user.id,)).fetchone()[0]
    assert rows == [("full_text", "exact", 1, 0, False), ("semantic", "exact", 2, 2 * chunks, False)]
