"""The request's shared connection: one checkout for many blocks, none when unused, each block
committed (or rolled back) as ``pool.connection()`` does, nested blocks on their own connection."""

from __future__ import annotations

import asyncio

import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from ragkeep.db.shared import SharedConnection


def _run(pg_url: str, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
            await pool.open(wait=True)
            await body(pool)

    asyncio.run(main())


def _checkouts(pool: AsyncConnectionPool) -> int:
    return pool.get_stats().get("requests_num", 0)


def test_one_checkout_for_every_block_and_none_unused(pg_url: str) -> None:
    async def body(pool: AsyncConnectionPool) -> None:
        before = _checkouts(pool)
        unused = SharedConnection(pool)
        await unused.release()
        assert _checkouts(pool) == before
        shared = SharedConnection(pool)
        pids = set()
        for _ in range(3):
            async with shared.connection() as conn:
                pids.add((await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0])
                assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE  # committed at the block's end
        await shared.release()
        assert len(pids) == 1 and _checkouts(pool) == before + 1

    _run(pg_url, body)


def test_blocks_commit_or_roll_back_as_the_pools_do(pg_url: str) -> None:
    async def body(pool: AsyncConnectionPool) -> None:
        shared = SharedConnection(pool)
        async with shared.connection() as conn:
            await conn.execute("CREATE TEMP TABLE shared_t (v int)")
        with pytest.raises(RuntimeError):
            async with shared.connection() as conn:
                await conn.execute("INSERT INTO shared_t VALUES (1)")
                raise RuntimeError("the route failed")
        async with shared.connection() as conn:
            await conn.execute("INSERT INTO shared_t VALUES (2)")
        async with shared.connection() as conn:
            rows = await (await conn.execute("SELECT v FROM shared_t")).fetchall()
        assert rows == [(2,)]
        await shared.release()

    _run(pg_url, body)


def test_a_nested_block_takes_its_own_connection(pg_url: str) -> None:
    async def body(pool: AsyncConnectionPool) -> None:
        shared = SharedConnection(pool)
        async with shared.connection() as outer, shared.connection() as inner:
            assert inner is not outer
        with pytest.raises(RuntimeError):
            async with shared.connection():
                await shared.release()
        await shared.release()
        assert pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]

    _run(pg_url, body)
