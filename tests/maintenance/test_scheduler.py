"""The scheduler's guarantees, driven tick by tick in one process with several ``Maintenance``
objects standing for replicas (the three-process test shows the same with real servers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ragkeep.config import MaintenanceConfig, Settings
from ragkeep.db.database import prepare_schema
from ragkeep.maintenance import Maintenance, RunOptions, history, next_tick
from ragkeep.maintenance.history import MAINTENANCE_LOCK_ID
from tests.maintenance.helpers import delete_chunks, seed_chunks

T0 = datetime(2031, 1, 1, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def url(db_factory: Callable[[str], str]) -> str:
    url = db_factory("sched")
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    return url


def config(**values: object) -> MaintenanceConfig:
    return MaintenanceConfig.model_validate({"vacuum_schedule": "0 3 * * *", **values})


def rows_for(url: str, tick: datetime) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, task, status, replica, parent_id FROM maintenance_runs WHERE scheduled_for = %s ORDER BY id",
            (tick,),
        ).fetchall()


def make_owner(url: str) -> uuid.UUID:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO users (email, hashed_password) VALUES (%s, 'x') RETURNING id", (f"{uuid.uuid4().hex}@t.test",)
        ).fetchone()
    assert row is not None
    return row[0]


def test_next_tick_reads_five_and_six_field_cron() -> None:
    base = datetime(2030, 5, 1, 12, 0, 1, 500000, tzinfo=UTC)
    assert next_tick("0 3 * * *", base) == datetime(2030, 5, 2, 3, 0, tzinfo=UTC)
    assert next_tick("*/15 * * * *", base) == datetime(2030, 5, 1, 12, 15, tzinfo=UTC)
    # The sixth field is seconds (croniter's convention), so a schedule can fire every few seconds.
    assert next_tick("* * * * * */3", base) == datetime(2030, 5, 1, 12, 0, 3, tzinfo=UTC)
    on_a_tick = datetime(2030, 5, 1, 12, 0, 3, tzinfo=UTC)
    assert next_tick("* * * * * */3", on_a_tick) == datetime(2030, 5, 1, 12, 0, 6, tzinfo=UTC)


def test_a_late_replica_does_not_run_a_tick_that_already_ran(url: str) -> None:
    a, b = Maintenance(config(vacuum_tables=["users"]), url), Maintenance(config(vacuum_tables=["users"]), url)

    async def scenario() -> tuple:
        first = await a.run_tick(T0)
        late = await b.run_tick(T0)  # arrives after the first run finished: no lock is held any more
        return first, late

    first, late = asyncio.run(scenario())
    assert first is not None and first["status"] == "succeeded" and late is None
    assert [r[:3] for r in rows_for(url, T0)] == [(first["id"], "vacuum", "succeeded")]
    assert (a.counters.ticks_claimed, a.counters.ticks_already_claimed) == (1, 0)
    assert (b.counters.ticks_claimed, b.counters.ticks_already_claimed) == (0, 1)


def test_replicas_racing_for_a_tick_run_it_once(url: str) -> None:
    replicas = [Maintenance(config(vacuum_tables=["users", "documents"]), url) for _ in range(3)]
    ticks = [T0 + timedelta(days=d) for d in range(1, 6)]

    async def scenario() -> list[list]:
        return [await asyncio.gather(*(r.run_tick(t) for r in replicas)) for t in ticks]

    outcomes = asyncio.run(scenario())
    for tick, results in zip(ticks, outcomes, strict=True):
        ran = [r for r in results if r is not None]
        assert len(ran) == 1 and ran[0]["status"] == "succeeded", results
        assert len(rows_for(url, tick)) == 1
    assert sum(r.counters.ticks_claimed for r in replicas) == len(ticks)
    assert sum(r.counters.ticks_already_claimed for r in replicas) == 2 * len(ticks)


def test_a_tick_is_skipped_while_a_run_holds_the_lock_and_a_manual_run_waits(url: str) -> None:
    m = Maintenance(config(vacuum_tables=["users"]), url)
    tick = T0 + timedelta(days=30)

    async def scenario(holder: psycopg.Connection) -> tuple:
        skipped = await m.run_tick(tick)
        run = await m.start_manual(RunOptions(tables=("users",)))
        await asyncio.sleep(0.5)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            waiting = await history.get_run(conn, run["id"])
        released_at = holder.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_ID,))
        await asyncio.gather(*m._runs)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            done = await history.get_run(conn, run["id"])
        return skipped, waiting, released_at, done

    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_ID,))
        skipped, waiting, released_at, done = asyncio.run(scenario(holder))
    assert skipped is not None and skipped["status"] == "skipped" and "still in progress" in skipped["error"]
    assert skipped["items"] == [] and skipped["started_at"] is not None
    assert waiting is not None and waiting["status"] == "queued" and waiting["started_at"] is None
    assert done is not None and done["status"] == "succeeded" and done["started_at"] >= released_at


def test_thresholds_skip_quiet_tables_on_schedule(url: str) -> None:
    owner = make_owner(url)
    seed_chunks(url, owner, 100)
    delete_chunks(url, owner, 4)
    m = Maintenance(
        config(
            vacuum_tables=["users", "chunks", "documents"],
            min_dead_tuples=10,
            thresholds={"users": {"min_dead_tuples": 0}, "documents": {"min_dead_tuples": 0, "min_dead_share": 0.5}},
        ),
        url,
    )
    run = asyncio.run(m.run_tick(T0 + timedelta(days=60)))
    assert run is not None and run["status"] == "succeeded"
    items = {i["table"]: i for i in run["items"]}
    assert items["users"]["status"] == "done"
    assert items["chunks"]["status"] == "done" and items["chunks"]["dead_tuples_before"] >= 25
    assert items["documents"]["status"] == "skipped" and "min_dead_share" in items["documents"]["note"]


def test_auto_reindex_runs_at_the_tick_before_the_vacuum(url: str) -> None:
    owner = make_owner(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX sched_hnsw ON chunks USING hnsw (embedding vector_l2_ops) WITH (m = 4, ef_construction = 8)"
        )
    try:
        seed_chunks(url, owner, 300)
        delete_chunks(url, owner, 2)
        advise_only = Maintenance(config(vacuum_tables=["chunks"], reindex_min_dead_tuples=10), url)
        # A replica whose tick cannot run (lock held elsewhere) must not rebuild either; use a real tick:
        tick = T0 + timedelta(days=90)
        with psycopg.connect(url, autocommit=True) as conn:
            before = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'chunks'").fetchone()
        assert before is not None and before[0] >= 150
        auto = Maintenance(config(vacuum_tables=["chunks"], reindex_min_dead_tuples=10, auto_reindex=True), url)
        run = asyncio.run(auto.run_tick(tick))
        assert run is not None and run["status"] == "succeeded" and run["reindex_advice"]["recommended"] is True
        rows = rows_for(url, tick)
        assert [(r[1], r[2]) for r in rows] == [("vacuum", "succeeded"), ("reindex", "succeeded")]
        assert rows[1][4] == run["id"]  # parent_id
        with psycopg.connect(url) as conn:
            child = conn.execute(
                "SELECT items, started_at, finished_at FROM maintenance_runs WHERE id = %s", (rows[1][0],)
            ).fetchone()
        assert child is not None and [i["index"] for i in child[0]] == ["sched_hnsw"]
        assert child[2] <= run["started_at"]

        # Advice without auto_reindex is recorded, not acted on.
        seed_chunks(url, owner, 300)
        delete_chunks(url, owner, 3)
        later = T0 + timedelta(days=91)
        run = asyncio.run(advise_only.run_tick(later))
        assert run is not None and run["reindex_advice"]["recommended"] is True
        assert [r[1] for r in rows_for(url, later)] == ["vacuum"]
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS sched_hnsw")


def test_a_run_left_by_a_dead_replica_is_marked_failed(url: str) -> None:
    async def scenario() -> tuple[int, int, int]:
        dead = await psycopg.AsyncConnection.connect(url, autocommit=True)
        gone = await history.claim(
            dead, task="vacuum", trigger="manual", options=RunOptions(), tables=["users"], status="running"
        )
        await dead.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as alive:
            live = await history.claim(alive, task="vacuum", trigger="manual", options=RunOptions(), tables=["users"])
            assert gone is not None and live is not None
            for _ in range(50):  # the closed backend leaves pg_stat_activity shortly after
                if await history.sweep_interrupted(alive):
                    break
                await asyncio.sleep(0.05)
            await history.finish(alive, live["id"], status="succeeded", items=[])
        return gone["id"], live["id"], 0

    gone_id, live_id, _ = asyncio.run(scenario())
    with psycopg.connect(url) as conn:
        rows = dict(
            conn.execute("SELECT id, status FROM maintenance_runs WHERE id IN (%s, %s)", (gone_id, live_id)).fetchall()
        )
        error = conn.execute("SELECT error FROM maintenance_runs WHERE id = %s", (gone_id,)).fetchone()
    assert rows == {gone_id: "failed", live_id: "succeeded"}
    assert error is not None and "interrupted" in error[0]


def test_stopping_cancels_a_waiting_run_and_records_it(url: str) -> None:
    m = Maintenance(config(), url)

    async def scenario() -> int:
        run = await m.start_manual(RunOptions(tables=("users",)))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await m.stop()
        assert time.monotonic() - started < 10
        return int(run["id"])

    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_ID,))
        run_id = asyncio.run(scenario())
        row = holder.execute("SELECT status, error FROM maintenance_runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None and row[0] == "failed" and "cancelled" in row[1]


def test_config_checks_table_names() -> None:
    with pytest.raises(ValueError, match="vacuum_tables"):
        Settings.model_validate({"database": {"maintenance": {"vacuum_tables": ["chunks; DROP TABLE users"]}}})
    with pytest.raises(ValueError, match="thresholds"):
        Settings.model_validate({"database": {"maintenance": {"thresholds": {"Bad Name": {"min_dead_tuples": 1}}}}})
    with pytest.raises(ValueError, match="reindex_dead_share"):
        Settings.model_validate({"database": {"maintenance": {"reindex_dead_share": 0}}})
    with pytest.raises(ValueError, match="min_dead_share"):
        Settings.model_validate({"database": {"maintenance": {"thresholds": {"chunks": {"min_dead_share": 2}}}}})
    ok = Settings.model_validate(
        {"database": {"maintenance": {"vacuum_tables": ["chunks", "chunks"], "auto_reindex": True}}}
    )
    assert ok.database.maintenance.vacuum_tables == ["chunks"]
