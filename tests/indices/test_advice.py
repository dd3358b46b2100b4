"""The advisor answers "do you need vector indexes?" from the data and the traffic it sees. Each
test gets a database of its own (same server), so nothing else in the session sways the advice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ragkeep.config import Settings
from ragkeep.db.database import start_embedded
from ragkeep.indices.advice import advise
from ragkeep.indices.memory import hnsw_bytes
from ragkeep.indices.sizing import index_bytes
from ragkeep.monitoring.searches import SearchRecorder
from ragkeep.monitoring.traffic import off_peak_hour, search_traffic
from tests.search.synthetic import DIM, add_chunks, unit
from tests.support import fresh_database, make_settings

THRESHOLD = 1000


@pytest.fixture
def db(pg_url: str, settings: Settings) -> Iterator[str]:
    with fresh_database(pg_url, DIM, settings.embedding.model) as url:
        yield url


def make_users(url: str, sizes: list[int]) -> list[uuid.UUID]:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, DIM))
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in sizes:
            uid = conn.execute("INSERT INTO users (email, hashed_password) VALUES (%s, 'x') RETURNING id",
                               (f"{uuid.uuid4().hex[:8]}@advice.test",)).fetchone()[0]
            ids.append(uid)
    for uid, n in zip(ids, sizes, strict=True):
        add_chunks(url, uid, unit(rng, n, centres))
    return ids


def run_advice(url: str, settings: Settings) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await register_vector_async(conn)
            return await advise(conn, settings, DIM, await search_traffic(conn))

    return asyncio.run(go())


def record(url: str, searches: list[dict[str, Any]]) -> None:
    async def go() -> None:
        async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
            rec = SearchRecorder(pool)
            for s in searches:
                rec.record(**s)
            await rec.flush()

    asyncio.run(go())


def tuned(settings: Settings) -> Settings:
    return settings.model_copy(update={"search": settings.search.model_copy(update={"exact_threshold": THRESHOLD})})


def test_small_tenants_need_no_index(db: str, settings: Settings) -> None:
    make_users(db, [50, 120, 300, 800])
    advice = run_advice(db, tuned(settings))
    assert advice["recommendation"]["action"] == "none" and advice["recommendation"]["builds"] == []
    assert "at most 1,000 vectors" in advice["recommendation"]["reason"]
    v = advice["vectors"]
    assert v["total"] == 1270 and v["users"] == 4 and v["per_user"]["max"] == 800
    assert v["per_user"]["p50"] in (120, 300) and v["above_threshold"] == []
    assert advice["recommendation"]["off_peak_hour_utc"] == 3  # no traffic yet: the default
    assert "no searches recorded" in advice["recommendation"]["when"]


def test_a_few_large_tenants_get_partial_indexes_named_with_memory_and_time(db: str, settings: Settings) -> None:
    small = make_users(db, [40] * 10)
    big, bigger = make_users(db, [1500, 2500])
    advice = run_advice(db, tuned(settings))
    rec = advice["recommendation"]
    assert rec["action"] == "partial"
    assert [b["user_id"] for b in rec["builds"]] == [bigger, big]  # largest first
    build = rec["builds"][0]
    assert build["vectors"] == 2500 and build["m"] == 16 and build["ef_construction"] == 64
    assert build["memory_bytes"] == hnsw_bytes(2500, DIM, 16) and build["build_seconds"] >= 1
    assert build["request"]["config"]["filters"] == {"owner_id": {"$eq": str(bigger)}}
    assert all(u not in {b["user_id"] for b in rec["builds"]} for u in small)
    # Once one of them has its own index, only the other is proposed.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX ix_adv ON chunks USING hnsw (embedding vector_cosine_ops) WHERE owner_id = '{bigger}'"
        )
        conn.execute("INSERT INTO tenant_indexes VALUES ('ix_adv', %s, 'cosine_distance')", (bigger,))
    rec = run_advice(db, tuned(settings))["recommendation"]
    assert [b["user_id"] for b in rec["builds"]] == [big]


def test_cross_user_traffic_calls_for_a_global_index_off_peak(db: str, settings: Settings) -> None:
    users = make_users(db, [600, 700, 400])
    now = datetime.now(UTC)
    base = {"kind": "semantic", "strategy": "exact", "db_ms": 5.0, "total_ms": 9.0}
    searches = []
    for h in range(24):  # traffic every hour but 05:00 UTC (of the previous day: inside the window)
        at = (now - timedelta(days=1)).replace(hour=h, minute=10)
        searches += [
            {**base, "user_id": users[0], "scope_size": 600, "cross_user": False, "at": at}
            for _ in range(1 if h == 5 else 4)
        ]
    # A superuser searching everything: 10 of 103 searches, at noon (at "now" they fell into the
    # 05:00 hour when the suite ran then, and 05:00 was no longer the quietest hour).
    noon = (now - timedelta(days=1)).replace(hour=12, minute=20)
    searches += [
        {**base, "user_id": users[1], "scope_size": 1700, "cross_user": True, "at": noon, "total_ms": 30.0}
        for _ in range(10)
    ]
    record(db, searches)
    advice = run_advice(db, tuned(settings))
    rec = advice["recommendation"]
    assert rec["action"] == "global" and rec["off_peak_hour_utc"] == 5 and rec["when"].startswith("05:00 UTC")
    assert [b["scope"] for b in rec["builds"]] == ["global"] and rec["builds"][0]["vectors"] == 1700
    assert "request" in rec["builds"][0] and "filters" not in rec["builds"][0]["request"]["config"]
    t = advice["traffic"]
    assert t["searches"] == 103 and abs(t["cross_user_share"] - 10 / 103) < 1e-9
    by_scope = {tuple(r["scope_vectors"]): r for r in t["by_scope_size"]}
    # p95 30 ms: the slowest seen, tighter than the 50 ms bucket.
    assert by_scope[(512, 1023)]["searches"] == 93 and by_scope[(1024, 2047)]["p95_ms"] == 30
    assert t["searches_by_hour_utc"][5] == 1


def test_off_peak_hour() -> None:
    assert off_peak_hour({}) == 3 and off_peak_hour(dict.fromkeys(range(24), 10) | {17: 2}) == 17


def test_an_index_larger_than_shared_buffers_is_warned_about(
    db: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same data on the session's server (shared_buffers 512 MB) and on one started with 2 MB:
    the partial index for 2,500 vectors (~5 MB by bench/sizing.py's figures) fits only the first."""
    sizes = [40] * 3 + [2500]
    make_users(db, sizes)
    roomy = run_advice(db, tuned(settings))["recommendation"]
    build = roomy["builds"][0]
    assert build["index_bytes"] == index_bytes(2500, DIM, 16) and build["memory_warning"] is None
    assert roomy["memory"]["warning"] is None and roomy["memory"]["shared_buffers_bytes"] == 512 * 1024 * 1024
    assert roomy["memory"]["proposed_indexes_bytes"] == build["index_bytes"]

    home = tmp_path_factory.mktemp("small-buffers")
    url, server = start_embedded(make_settings(home, None, database={"embedded_shared_buffers": "2MB"}))
    try:
        with fresh_database(url, DIM, settings.embedding.model) as small:
            make_users(small, sizes)
            rec = run_advice(small, tuned(settings))["recommendation"]
            warning = rec["builds"][0]["memory_warning"]
            assert warning is not None and "more than shared_buffers (2 MiB)" in warning
            assert "raise shared_buffers" in warning.lower() and "Citus" in warning and "docs/scaling.md" in warning
            assert "effective_cache_size" not in warning  # 4 GB by default: the RAM would hold it
            assert rec["memory"]["warning"] is not None and rec["builds"][0]["warning"] is None  # build memory fits
            with psycopg.connect(small, autocommit=True) as conn:  # a server whose RAM would not hold it either
                conn.execute(sql.SQL("ALTER DATABASE {} SET effective_cache_size = '3MB'").format(
                    sql.Identifier(conn.info.dbname)))
            warning = run_advice(small, tuned(settings))["recommendation"]["builds"][0]["memory_warning"]
            assert "exceeds effective_cache_size (3 MiB) too" in warning
    finally:
        server.stop()  # type: ignore[attr-defined]


def test_a_dominant_user_is_named_for_their_own_index(db: str, settings: Settings) -> None:
    """Single node: dedicated capacity is the user's partial index. 3,000 of 3,200 vectors is a
    dominant share; four users of 1,100 each (25%) are large but none dominates."""
    *_, power = make_users(db, [40] * 5 + [3000])
    iso = run_advice(db, tuned(settings))["recommendation"]["isolation"]
    assert iso["mode"] == "single_node" and iso["dominant_share"] == 0.3
    (c,) = iso["candidates"]
    assert (c["user_id"], c["vectors"], c["action"], c["done"], c["shard_id"]) == (
        power, 3000, "partial_index", False, None)
    assert abs(c["vector_share"] - 3000 / 3200) < 1e-9 and c["reasons"] == ["holds 94% of all vectors (3,000)"]
    assert c["command"] == f"ragkeep tenant isolate {power}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX ix_power ON chunks USING hnsw (embedding vector_cosine_ops) WHERE owner_id = '{power}'"
        )
        conn.execute("INSERT INTO tenant_indexes VALUES ('ix_power', %s, 'cosine_distance')", (power,))
    (c,) = run_advice(db, tuned(settings))["recommendation"]["isolation"]["candidates"]
    assert c["done"] is True


def test_no_dominant_user_no_candidate_but_a_dominant_query_rate_is_one(db: str, settings: Settings) -> None:
    users = make_users(db, [1100] * 4 + [200])
    advice = run_advice(db, tuned(settings))
    assert advice["recommendation"]["isolation"]["candidates"] == []
    assert advice["recommendation"]["action"] == "partial"  # the large users still get their indexes
    now = datetime.now(UTC)
    base = {"kind": "semantic", "strategy": "exact", "db_ms": 5.0, "total_ms": 9.0, "cross_user": False, "at": now}
    # users[1] makes 80 of 160 searches; users[4] (200 vectors, below the threshold) another 60 (38%):
    # on a single node an index would not help them, so only users[1] is named.
    record(db, [{**base, "user_id": users[1], "scope_size": 1100} for _ in range(80)]
           + [{**base, "user_id": users[4], "scope_size": 200} for _ in range(60)]
           + [{**base, "user_id": u, "scope_size": 1100} for u in (users[0], users[2]) for _ in range(10)])
    advice = run_advice(db, tuned(settings))
    (c,) = advice["recommendation"]["isolation"]["candidates"]
    assert c["user_id"] == users[1] and c["search_share"] == 0.5 and c["searches"] == 80
    assert c["reasons"] == ["makes 50% of all searches (80 in 7 days)"]
    top = advice["traffic"]["top_users"]
    assert [(t["user_id"], t["searches"]) for t in top[:2]] == [(users[1], 80), (users[4], 60)]
