"""The background services start and stop through the real app lifespan, on a database of its own.

After the lifespan ends, however it ended (a start that failed part-way, a normal stop, a stop in
which one service raised), nothing of the server may be left: no asyncio task, no session on its
database (pool, ingestion lease, maintenance, builds), no parser worker process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.conninfo import conninfo_to_dict

from ragkeep.api.app import create_app
from ragkeep.config import Settings
from ragkeep.indices.build import IndexSpec
from ragkeep.indices.promotion import AutoPromoter
from ragkeep.ingest import isolation
from ragkeep.ingest.isolation import ParserPool
from ragkeep.ingest.parsers import ParseLimits
from ragkeep.ingest.pipeline import Ingestor
from ragkeep.maintenance import Maintenance, RunOptions
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, create_database, drop_database, make_settings

PARSER = "ragkeep.ingest.isolation"


class Injected(RuntimeError):
    """The failure a test puts into one service's start or stop."""


@pytest.fixture
def own_settings(pg_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A server on an empty database of its own: every session on it is the server's."""
    url = create_database(pg_url, "life")
    try:
        yield make_settings(
            tmp_path, url,
            ingestion={"background_threshold_bytes": 0, "parse_workers": 2},  # every file upload in the background
            indices={"auto_promote_threshold": 1},  # the promoter runs a task
            database={"maintenance": {"vacuum_schedule": "0 0 1 1 *"}},  # the scheduler runs a task (idle)
        )
    finally:
        drop_database(pg_url, url)


def parser_workers() -> set[int]:
    """Live parser worker processes started by this process (the session's server may own some)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if PARSER in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return found


async def sessions(pg_url: str, url: str, settle: float = 3.0) -> list[tuple[Any, ...]]:
    """The sessions still open on the server's database, once those closing have had ``settle``
    seconds to end (a backend leaves pg_stat_activity shortly after its client closed)."""
    dbname = conninfo_to_dict(url)["dbname"]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        deadline = asyncio.get_running_loop().time() + settle
        while True:
            cur = await conn.execute(
                "SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            rows = await cur.fetchall()
            if not rows or asyncio.get_running_loop().time() > deadline:
                return rows
            await asyncio.sleep(0.05)


def other_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())


async def assert_nothing_left(pg_url: str, settings: Settings, workers_before: set[int]) -> None:
    """Checked inside the event loop: ``asyncio.run`` would cancel leftover tasks at its end."""
    assert other_tasks() == []
    assert await sessions(pg_url, settings.database.url or "") == []
    assert parser_workers() - workers_before == set()


async def busy(app: FastAPI) -> None:
    """Work in flight in every service at the moment the server stops: background ingestions
    (parser workers starting and parsing), an index build then its warm-up, a manual VACUUM."""
    services = app.state.services
    await services.ingestor.parsers.parse(b"a first parse leaves an idle worker", "first.txt", "text/plain")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ragkeep") as client:
        resp = await client.post("/v3/users/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        token = resp.json()["results"]["access_token"]["token"]
        for i in range(3):  # two parse workers: one idle, one to start; the third waits its turn
            resp = await client.post(
                "/v3/documents",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": (f"doc{i}.txt", f"Document {i} about lifecycles. " * 200, "text/plain")},
            )
            assert resp.status_code == 202, resp.text
    await services.indexes.start(IndexSpec("hnsw", "cosine_distance").validated())
    await services.maintenance.start_manual(RunOptions())
    await asyncio.sleep(0.05)  # let the ingestions reach their parsers


def assert_failed_start_leaves_nothing(settings: Settings, pg_url: str) -> None:
    """The app's start raises the injected failure, and nothing it started is left afterwards."""
    before = parser_workers()

    async def scenario() -> None:
        app = create_app(settings)
        with pytest.raises(Injected):
            async with app.router.lifespan_context(app):
                pytest.fail("the server started although a service failed to")
        await assert_nothing_left(pg_url, settings, before)

    asyncio.run(scenario())


def test_a_start_that_fails_part_way_stops_what_started(
    own_settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingestor's start fails after it took its lease and a parser worker is up: that half-
    started ingestor and the monitor, recorder and index start-up before it are all stopped."""
    real_start = Ingestor.start

    async def start_then_fail(self: Ingestor, url: str) -> None:
        await real_start(self, url)
        await self.parsers.parse(b"a worker is running", "a.txt", "text/plain")
        raise Injected("the ingestor failed to start")

    monkeypatch.setattr(Ingestor, "start", start_then_fail)
    assert_failed_start_leaves_nothing(own_settings, pg_url)


def test_a_start_that_fails_last_stops_every_service(
    own_settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: AutoPromoter) -> None:
        raise Injected("auto promotion failed to start")

    monkeypatch.setattr(AutoPromoter, "start", fail)
    assert_failed_start_leaves_nothing(own_settings, pg_url)


def test_a_stop_leaves_nothing_running(own_settings: Settings, pg_url: str) -> None:
    before = parser_workers()

    async def scenario() -> None:
        app = create_app(own_settings)
        async with app.router.lifespan_context(app):
            await busy(app)
            assert parser_workers() - before, "no parser worker was running at the stop"
        await assert_nothing_left(pg_url, own_settings, before)

    asyncio.run(scenario())


def test_a_stop_that_raises_still_stops_the_others(
    own_settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Auto promotion stops first; its failure is logged and every other service still stops
    (maintenance's runs, the ingestions, the builds, the pool, the lease, the parser workers)."""
    real_stop = AutoPromoter.stop

    async def stop_then_fail(self: AutoPromoter) -> None:
        await real_stop(self)
        raise Injected("auto promotion failed to stop")

    monkeypatch.setattr(AutoPromoter, "stop", stop_then_fail)
    before = parser_workers()

    async def scenario() -> None:
        app = create_app(own_settings)
        with caplog.at_level(logging.ERROR, logger="ragkeep.api.lifecycle"):
            async with app.router.lifespan_context(app):
                await busy(app)
        await assert_nothing_left(pg_url, own_settings, before)

    asyncio.run(scenario())
    failures = [r for r in caplog.records if r.name == "ragkeep.api.lifecycle"]
    messages = [r.getMessage() for r in failures]
    assert messages == ["stopping auto promotion failed; stopping the other services all the same"]
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], Injected)


def test_a_stop_that_raises_is_logged_not_raised_for_every_service(
    own_settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Maintenance stops in the middle of the order: the services before and after it stop."""
    real_stop = Maintenance.stop

    async def stop_then_fail(self: Maintenance) -> None:
        await real_stop(self)
        raise Injected("maintenance failed to stop")

    monkeypatch.setattr(Maintenance, "stop", stop_then_fail)
    before = parser_workers()

    async def scenario() -> None:
        app = create_app(own_settings)
        async with app.router.lifespan_context(app):
            await busy(app)
        await assert_nothing_left(pg_url, own_settings, before)

    asyncio.run(scenario())
    assert "stopping maintenance failed" in caplog.text


def test_a_parser_worker_starting_when_the_server_stops_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload cancelled at shutdown while its worker process starts (in a thread, which runs
    on): the worker appears after the pool was closed, and must be killed all the same."""
    release = threading.Event()
    starting: list[isolation._Worker] = []

    class SlowToStart(isolation._Worker):
        def __init__(self, memory_bytes: int, timeout_seconds: float) -> None:
            starting.append(self)
            release.wait(30)  # until the pool is closed
            super().__init__(memory_bytes, timeout_seconds)

    monkeypatch.setattr(isolation, "_Worker", SlowToStart)

    async def scenario() -> None:
        pool = ParserPool(1, 5.0, 1024, ParseLimits())
        parse = asyncio.create_task(pool.parse(b"text", "a.txt", None))
        while not starting:
            await asyncio.sleep(0.01)
        parse.cancel()  # the server stops: the ingestion is cancelled
        await asyncio.gather(parse, return_exceptions=True)
        await pool.close()
        release.set()  # the thread goes on and starts the process
        worker = starting[0]  # held here: it never ends by its pipe being collected
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not hasattr(worker, "process") or worker.process.poll() is None:
                if asyncio.get_running_loop().time() > deadline:
                    pytest.fail("the parser worker started after the pool closed is still running")
                await asyncio.sleep(0.01)
        finally:
            if hasattr(worker, "process"):
                worker.kill()

    asyncio.run(scenario())
