"""Automatic tenant promotion: a user past the threshold gets a partial index, in the due hour
only, once, and one build at a time even when several replicas check together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import psycopg
import pytest

from ragkeep.config import Settings
from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.promotion import AutoPromoter
from ragkeep.monitoring.traffic import observed_off_peak_hour
from tests.indices.test_advice import make_users
from tests.search.synthetic import DIM
from tests.support import fresh_database


@pytest.fixture
def db(pg_url: str, settings: Settings) -> Iterator[str]:
    with fresh_database(pg_url, DIM, settings.embedding.model) as url:
        yield url


def promoting(settings: Settings, hour: int) -> Settings:
    indices = settings.indices.model_copy(update={"auto_promote_threshold": 200, "auto_promote_hour": hour,
                                                  "prewarm": False})
    return settings.model_copy(update={"indices": indices})


def registered(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT t.owner_id, i.indisvalid, pg_get_expr(i.indpred, i.indrelid) FROM tenant_indexes t"
            " JOIN pg_class c ON c.relname = t.index_name JOIN pg_index i ON i.indexrelid = c.oid").fetchall()


def test_promotes_the_largest_user_in_its_hour_once_and_one_build_at_a_time(db: str, settings: Settings) -> None:
    big, bigger, small = make_users(db, [400, 900, 100])
    # Mid-hour: the checks at now + 5 and + 10 minutes stay in the promotion hour (a run at :55
    # crossed into the next hour and found nothing to do).
    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)

    async def go() -> None:
        builder = IndexBuilder(db, settings.indices)
        try:
            elsewhere = AutoPromoter(promoting(settings, (now.hour + 1) % 24), builder, observed_off_peak_hour)
            assert await elsewhere.run_once(now) is None  # not the promotion hour
            assert registered(db) == []
            replicas = [AutoPromoter(promoting(settings, now.hour), builder, observed_off_peak_hour) for _ in range(3)]
            got = [g for g in await asyncio.gather(*(r.run_once(now) for r in replicas)) if g is not None]
            # The largest first; a replica arriving after that build finished may promote the next
            # one, but builds never overlap.
            assert got[0] == bigger and len(got) == len(set(got))
            for rec in list(builder.records.values()):
                await rec.task
            spans = sorted((r.started_at, r.finished_at) for r in builder.records.values())
            assert all(a[1] <= b[0] for a, b in pairwise(spans))
            rows = {r[0]: r for r in registered(db)}
            assert rows[bigger][1] is True and str(bigger) in rows[bigger][2]
            if big not in rows:  # the next check promotes the next user
                assert await replicas[0].run_once(now + timedelta(minutes=5)) == big
                for rec in list(builder.records.values()):
                    await rec.task
            assert await replicas[0].run_once(now + timedelta(minutes=10)) is None
            assert {r[0] for r in registered(db)} == {big, bigger} and small not in {r[0] for r in registered(db)}
        finally:
            await builder.drain()

    asyncio.run(go())
