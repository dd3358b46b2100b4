"""Start-up repair of INVALID vector indexes (left by interrupted builds), and start-up warming."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from ragkeep.config import IndicesConfig
from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.startup import REPAIR_LOCK_ID, on_start, repair_invalid, warm_all
from tests.indices.seed import seeded

NAME = "ix_test_invalid"


def _status(url: str, name: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)).fetchone()
    return None if row is None else ("valid" if row[0] else "invalid")


def _make_invalid(url: str, owner: uuid.UUID) -> None:
    """A genuinely failed CONCURRENTLY build: ivfflat refuses to run k-means in 1 MB."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1MB'")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(
                sql.SQL(
                    f"CREATE INDEX CONCURRENTLY {NAME} ON chunks USING ivfflat (embedding vector_cosine_ops) "
                    "WITH (lists = 20) WHERE owner_id = {}::uuid"
                ).format(sql.Literal(str(owner)))
            )
    assert _status(url, NAME) == "invalid"


def _drop(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX IF EXISTS {NAME}")


@pytest.fixture
def owner(make_user, settings):
    user = make_user("ixinvalid")
    with seeded(settings.database.url, user.id, 600, seed=3):
        yield user.id


def test_report_leaves_it_and_the_lock_lets_one_replica_act(owner, settings, admin) -> None:
    url = settings.database.url
    _make_invalid(url, owner)
    try:
        ix = admin.get(f"/v3/indices/vectors/{NAME}").json()["results"]["index"]
        assert ix["status"] == "invalid" and ix["progress"] is None
        builder = IndexBuilder(url, IndicesConfig(on_invalid="report"))
        report = asyncio.run(repair_invalid(builder))
        assert report.acted and NAME in report.invalid and _status(url, NAME) == "invalid"
        # Another replica holds the lock: this one leaves the work to it.
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (REPAIR_LOCK_ID,))
            report = asyncio.run(repair_invalid(IndexBuilder(url, IndicesConfig(on_invalid="drop"))))
            assert not report.acted and _status(url, NAME) == "invalid"
        report = asyncio.run(repair_invalid(IndexBuilder(url, IndicesConfig(on_invalid="drop"))))
        assert report.acted and report.dropped == [NAME] and _status(url, NAME) is None
    finally:
        _drop(url)


def test_rebuild_makes_it_valid_and_warms(owner, settings) -> None:
    url = settings.database.url
    _make_invalid(url, owner)
    try:
        builder = IndexBuilder(url, IndicesConfig(on_invalid="rebuild"))

        async def run() -> None:
            await on_start(builder)  # repair, then warm every valid vector index
            await builder.drain()

        asyncio.run(run())
        assert _status(url, NAME) == "valid"
        record = builder.records[NAME]
        assert record.kind == "reindex" and record.state == "succeeded" and record.plan.maintenance_work_mem_mb >= 64
        assert builder.warmer.states[NAME].state == "warm" and builder.warmer.states[NAME].blocks > 0
    finally:
        _drop(url)


def test_an_index_being_built_is_not_touched(owner, settings) -> None:
    """A build in progress is INVALID in pg_index too; the progress view tells it apart."""
    url = settings.database.url
    name = "ix_test_inprogress"
    done = threading.Event()

    def build() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '1MB'")  # spill to disk: a slow build
                conn.execute(f"CREATE INDEX CONCURRENTLY {name} ON chunks USING hnsw (embedding vector_l2_ops) "
                             "WITH (m = 48, ef_construction = 400)")
        except psycopg.Error:
            pass
        finally:
            done.set()

    t = threading.Thread(target=build)
    t.start()
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as conn:
            while not conn.execute("SELECT 1 FROM pg_stat_progress_create_index WHERE index_relid = to_regclass(%s)",
                                   (name,)).fetchone():
                assert time.monotonic() < deadline and not done.is_set(), "the build was not seen running"
                time.sleep(0.02)
        report = asyncio.run(repair_invalid(IndexBuilder(url, IndicesConfig(on_invalid="drop"))))
        assert report.acted and name not in report.invalid
        assert _status(url, name) == "invalid"  # still building, untouched
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_progress_create_index")
        done.wait(60)
        t.join()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX IF EXISTS {name}")


def test_warm_all_warms_valid_indexes(server, settings) -> None:
    url = settings.database.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX ix_test_startwarm ON chunks USING hnsw (embedding vector_l2_ops) "
            "WITH (m = 4, ef_construction = 8)"
        )
    try:
        builder = IndexBuilder(url, IndicesConfig())
        names = asyncio.run(warm_all(builder))
        assert "ix_test_startwarm" in names and builder.warmer.states["ix_test_startwarm"].state == "warm"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS ix_test_startwarm")
