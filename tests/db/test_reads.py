"""Read routing (db/reads.py) against the real database: write marks, the lag clock, and standbys
that cannot serve (unreachable, not in recovery) taken out with reads on the primary, never failed.
The streaming-standby cases (replay paused, standby stopped) are in tests/db/test_reads_standby.py."""

from __future__ import annotations

import asyncio
import socket
import uuid

import psycopg
import pytest

from ragkeep.config import ConfigError, DatabaseConfig, load_settings
from ragkeep.db.database import _read_router
from ragkeep.db.pool import ResilientPool
from ragkeep.db.reads import ReadRouter, Reads, _Samples, record_write, write_position
from ragkeep.db.shared import SharedConnection


def test_lag_is_how_long_ago_the_primary_first_had_unreplayed_wal() -> None:
    samples = _Samples(keep=60)
    samples.add(100.0, 1000)
    samples.add(101.0, 1000)  # no new WAL: not a new point
    samples.add(102.0, 2000)
    samples.add(103.0, 3000)
    assert samples.lag(3000, now=104.0) == 0.0  # replayed everything
    assert samples.lag(2500, now=104.0) == 1.0  # 3000 appeared at 103
    assert samples.lag(1500, now=104.0) == 2.0  # 2000 appeared at 102
    assert samples.lag(0, now=104.0) == 4.0


def test_old_samples_are_dropped_but_one_before_the_window_is_kept() -> None:
    samples = _Samples(keep=10)
    for t in range(100):
        samples.add(float(t), t * 10)
    assert len(samples.points) <= 12
    assert samples.lag(0, now=99.0) >= 10.0  # a standby stuck at 0 still reads as lagging


def test_read_urls_from_the_environment() -> None:
    env = {"RAGKEEP_DATABASE__READ_URLS": "postgresql://a/x, postgresql://b/x"}
    assert load_settings(environ=env).database.read_urls == ["postgresql://a/x", "postgresql://b/x"]
    env = {"RAGKEEP_DATABASE__READ_URLS": '["postgresql://a/x"]'}
    assert load_settings(environ=env).database.read_urls == ["postgresql://a/x"]
    with pytest.raises(ConfigError, match="read_urls"):
        load_settings(environ={"RAGKEEP_DATABASE__READ_URLS": "[not json"})


@pytest.fixture
def migrated(pg_url: str, server: object) -> str:
    """The session database, migrated by the session server (write_marks, the vector type)."""
    return pg_url


def test_write_marks_only_move_forward_and_expire(migrated: str) -> None:
    pg_url = migrated
    async def run() -> None:
        user = uuid.uuid4()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            assert await write_position(conn, user, 60) == 0
            first = await record_write(conn, user)
            assert first > 0 and await write_position(conn, user, 60) == first
            await conn.execute("CREATE TEMP TABLE t_wal AS SELECT generate_series(1, 1000) AS n")
            await conn.execute("SELECT pg_switch_wal()")  # move the WAL on for certain
            second = await record_write(conn, user)
            assert second > first and await write_position(conn, user, 60) == second
            await conn.execute("UPDATE write_marks SET at = now() - interval '1 hour' WHERE user_id = %s", (user,))
            assert await write_position(conn, user, 60) == 0  # any standby in rotation has it by now

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _router(pg_url: str, read_urls: list[str]) -> ReadRouter:
    config = DatabaseConfig(read_urls=read_urls, replica_check_seconds=0.2, connect_timeout_seconds=2)
    primary = ResilientPool(pg_url, min_size=1, max_size=2, open=False)
    router = _read_router(primary, config)
    return router


def test_a_standby_that_cannot_serve_is_out_and_reads_go_to_the_primary(migrated: str) -> None:
    """Nothing listens on one URL; the other is the primary itself (not in recovery, as a promoted
    standby would be). Both are out of rotation after the first check, and every read works."""
    pg_url = migrated
    dead = f"postgresql://nobody@127.0.0.1:{_free_port()}/ragkeep"

    async def run() -> None:
        router = _router(pg_url, [dead, pg_url])
        await router.primary.open(wait=True)
        try:
            await router.start()
            unreachable, promoted = router.standbys
            assert not unreachable.in_rotation and "unreachable" in unreachable.reason
            assert not promoted.in_rotation and "not in recovery" in promoted.reason
            assert router.choose(0) is None

            reads = Reads(router, SharedConnection(router.primary), uuid.uuid4())
            for _ in range(3):
                async with reads.connection() as conn:
                    cur = await conn.execute("SELECT pg_is_in_recovery()")
                    assert (await cur.fetchone()) == (False,)
            assert router.primary_reads == 3 and unreachable.reads == promoted.reads == 0
        finally:
            await router.stop()
            await router.primary.close()

    asyncio.run(run())


def test_without_read_urls_the_router_does_nothing(pg_url: str) -> None:
    async def run() -> None:
        router = _router(pg_url, [])
        await router.start()
        assert not router.enabled and router._task is None
        await router.stop()

    asyncio.run(run())


def test_database_password_goes_into_read_urls_without_one() -> None:
    config = DatabaseConfig(
        url="postgresql://u@p/ragkeep",
        password="s3cret",
        read_urls=["postgresql://u@s1/ragkeep", "postgresql://u:own@s2/ragkeep"],
    )
    first, second = config.read_connection_urls()
    assert "password=s3cret" in first and "s1" in first
    assert second == "postgresql://u:own@s2/ragkeep"  # a URL's own password wins
