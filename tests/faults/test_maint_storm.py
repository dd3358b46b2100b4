"""Issue 10, finding 1: concurrent manual maintenance runs must queue without deadlocking.

A run that waited for the maintenance lock inside ``pg_advisory_lock`` held a snapshot the whole
time; the lock holder's ``REINDEX INDEX CONCURRENTLY`` waits for every older snapshot, so
PostgreSQL killed one of them: the waiter's run stayed ``queued`` forever, or the REINDEX failed
and left a ``*_ccnew`` copy that later runs (and the start-up repair) rebuilt and copied again.

These tests run a real server on a database of their own, fire one reindex run and several plain
runs at once, a few times over, and check the history, the catalog and PostgreSQL's deadlock
counter. The leftover tests make genuine leftovers (a REINDEX CONCURRENTLY cancelled while it
waits for old snapshots) and hand-made valid copies, and check that a reindex run and the
start-up repair drop them and never rebuild them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ragkeep.config import IndicesConfig
from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.startup import repair_invalid
from ragkeep.maintenance.history import MAINTENANCE_LOCK_ID
from tests.maintenance.helpers import FINISHED, seed_chunks, wait_for_run
from tests.support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerThread,
    login,
    make_settings,
    own_server,
    register,
)

INDEX = "storm_hnsw"
ROUNDS = 3
PLAIN_RUNS = 3
LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")


@pytest.fixture(scope="module")
def storm_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    home: Path = tmp_path_factory.mktemp("storm-home")
    with own_server(pg_url, home, "storm") as srv:
        storm_url = srv.database_url
        user = register(srv.base_url, "storm")
        seed_chunks(storm_url, user.id, 900)
        with psycopg.connect(storm_url, autocommit=True) as conn:
            conn.execute(
                f"CREATE INDEX {INDEX} ON chunks USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 4, ef_construction = 16)"
            )
        yield srv


@pytest.fixture(scope="module")
def storm_url(storm_server: ServerThread) -> str:
    return storm_server.database_url


@pytest.fixture(scope="module")
def storm_admin(storm_server: ServerThread) -> Iterator[httpx.Client]:
    with login(storm_server.base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def replica_admin(
    storm_server: ServerThread, storm_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A second server process's worth of maintenance on the same database (a replica): its
    queued runs can only wait for the first one's through PostgreSQL."""
    home: Path = tmp_path_factory.mktemp("storm-replica-home")
    with (
        ServerThread(make_settings(home, storm_url)) as srv,
        login(srv.base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client,
    ):
        yield client


@pytest.fixture(autouse=True)
def no_leftovers_after(storm_url: str) -> Iterator[None]:
    """Each test starts from chunks with its one vector index, whatever the previous one left."""
    yield
    with psycopg.connect(storm_url, autocommit=True) as conn:
        for name in chunk_indexes(storm_url):
            if LEFTOVER.search(name):
                conn.execute(f'DROP INDEX IF EXISTS "{name}"')


def chunk_indexes(url: str) -> dict[str, tuple[str, bool]]:
    """Every index of chunks, straight from pg_index: name -> (access method, valid)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, am.amname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = 'chunks'::regclass"
        ).fetchall()
    return {name: (method, valid) for name, method, valid in rows}


def vector_indexes(url: str) -> set[str]:
    return {name for name, (method, _) in chunk_indexes(url).items() if method in ("hnsw", "ivfflat")}


def deadlocks(url: str) -> int:
    """PostgreSQL's count of deadlock victims in this database (a killed backend flushes it on exit)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def all_runs(admin: httpx.Client) -> list[dict[str, Any]]:
    resp = admin.get("/v3/system/maintenance", params={"limit": 1000})
    resp.raise_for_status()
    return resp.json()["results"]


def storm_round(admins: list[httpx.Client]) -> list[int]:
    """One reindex run and PLAIN_RUNS plain runs requested at the same moment, spread over the
    replicas (the reindex on the first); their ids."""
    bodies = [{"tables": ["chunks"], "reindex": True}] + [{"tables": ["chunks", "documents"]}] * PLAIN_RUNS
    barrier = threading.Barrier(len(bodies))
    ids: list[int] = []
    errors: list[str] = []

    def fire(n: int, body: dict[str, Any]) -> None:
        barrier.wait()
        resp = admins[n % len(admins)].post("/v3/system/maintenance/vacuum", json=body)
        if resp.status_code == 202:
            ids.append(int(resp.json()["results"]["id"]))
        else:
            errors.append(f"{resp.status_code} {resp.text}")

    threads = [threading.Thread(target=fire, args=(n, b)) for n, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return ids


def wait_finished(admin: httpx.Client, timeout: float) -> list[dict[str, Any]]:
    """Every run in the history, once none is queued or running (or when ``timeout`` is up)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = all_runs(admin)
        if all(r["status"] in FINISHED for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.25)


def test_a_storm_of_manual_runs_queues_without_deadlocks(
    storm_admin: httpx.Client, replica_admin: httpx.Client, storm_url: str
) -> None:
    before = vector_indexes(storm_url)
    assert before == {INDEX}
    deadlocks_before = deadlocks(storm_url)

    fired: list[int] = []
    for n in range(ROUNDS):
        # Round by round the reindex comes from either replica, so some waiters are on the other.
        fired += storm_round([storm_admin, replica_admin][n % 2 :] + [storm_admin, replica_admin][: n % 2])
        # Generous: a run here takes well under a second; a stuck one never finishes.
        wait_finished(storm_admin, timeout=60)
    runs = wait_finished(storm_admin, timeout=30)
    time.sleep(2)  # a killed backend's statistics reach pg_stat_database when it exits

    stuck = [(r["id"], r["task"], r["status"]) for r in runs if r["status"] not in ("succeeded", "failed")]
    assert not stuck, f"runs left queued/running: {stuck}"
    assert set(fired) <= {r["id"] for r in runs}
    reindexes = [r for r in runs if r["task"] == "reindex"]
    assert len(reindexes) == ROUNDS, reindexes
    victims = [(r["id"], r["error"]) for r in runs if "deadlock" in (r["error"] or "") + str(r["items"])]
    assert not victims, f"deadlock victims among the runs: {victims}"
    assert deadlocks(storm_url) == deadlocks_before, "PostgreSQL detected a deadlock during the storm"
    failed = [(r["id"], r["task"], r["error"]) for r in runs if r["status"] == "failed"]
    assert not failed, failed
    for r in reindexes:
        assert [i["index"] for i in r["items"]] == [INDEX] and r["items"][0]["status"] == "done", r

    indexes = chunk_indexes(storm_url)
    assert vector_indexes(storm_url) == before, sorted(indexes)
    assert not [n for n in indexes if "_ccnew" in n or "_ccold" in n], sorted(indexes)
    assert all(valid for _, valid in indexes.values()), indexes


def make_failed_reindex(url: str) -> str:
    """A genuine leftover: REINDEX CONCURRENTLY cancelled while it waits for an old snapshot
    leaves its new copy ``<index>_ccnew`` behind, INVALID. Returns the leftover's name."""
    with psycopg.connect(url) as holder:  # a transaction with a snapshot the REINDEX must wait out
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT 1")
        outcome: list[BaseException | None] = []

        def reindex() -> None:
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"REINDEX INDEX CONCURRENTLY {INDEX}")
                outcome.append(None)
            except psycopg.Error as e:
                outcome.append(e)

        t = threading.Thread(target=reindex)
        t.start()
        try:
            deadline = time.monotonic() + 60
            with psycopg.connect(url, autocommit=True) as watch:
                while True:
                    row = watch.execute(
                        "SELECT pid FROM pg_stat_progress_create_index WHERE phase = 'waiting for old snapshots'"
                    ).fetchone()
                    if row:
                        watch.execute("SELECT pg_cancel_backend(%s)", (row[0],))
                        break
                    assert time.monotonic() < deadline and t.is_alive(), "the REINDEX never waited for the snapshot"
                    time.sleep(0.02)
        finally:
            t.join(60)
    assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled), outcome
    leftovers = [n for n, (_, valid) in chunk_indexes(url).items() if LEFTOVER.search(n) and not valid]
    assert leftovers == [f"{INDEX}_ccnew"], chunk_indexes(url)
    return leftovers[0]


def make_valid_copy(url: str, name: str) -> None:
    """What the start-up repair used to make of an invalid leftover: a valid copy under its name."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {name} ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 4, ef_construction = 16)"
        )


def test_a_reindex_run_drops_leftovers_and_never_rebuilds_them(storm_admin: httpx.Client, storm_url: str) -> None:
    invalid = make_failed_reindex(storm_url)
    valid = f"{INDEX}_ccnew1"
    make_valid_copy(storm_url, valid)
    assert {invalid, valid, INDEX} <= vector_indexes(storm_url)

    advice = storm_admin.get("/v3/system/status").json()["results"]["maintenance"]["reindex_advice"]
    assert advice["indexes"] == [INDEX], advice

    resp = storm_admin.post("/v3/system/maintenance/vacuum", json={"tables": ["chunks"], "reindex": True})
    assert resp.status_code == 202, resp.text
    run = wait_for_run(storm_admin, resp.json()["results"]["id"])
    children = storm_admin.get("/v3/system/maintenance", params={"parent_id": run["id"]}).json()["results"]

    assert run["status"] == "succeeded", run
    assert len(children) == 1 and children[0]["status"] == "succeeded", children
    rebuilt = [i["index"] for i in children[0]["items"] if i["status"] == "done"]
    assert rebuilt == [INDEX], children[0]["items"]
    dropped = sorted(i["index"] for i in children[0]["items"] if i["status"] == "dropped")
    assert dropped == sorted([invalid, valid]), children[0]["items"]
    indexes = chunk_indexes(storm_url)
    assert vector_indexes(storm_url) == {INDEX}, sorted(indexes)
    assert not [n for n in indexes if LEFTOVER.search(n)], sorted(indexes)


def test_the_start_up_repair_drops_leftovers_instead_of_rebuilding_them(
    storm_server: ServerThread, storm_url: str
) -> None:
    invalid = make_failed_reindex(storm_url)
    valid = f"{INDEX}_ccnew1"
    make_valid_copy(storm_url, valid)

    # The default policy, on_invalid = "rebuild", is the one that turned invalid leftovers into
    # valid copies that every later reindex copied again.
    builder = IndexBuilder(storm_url, IndicesConfig())

    async def start() -> Any:
        report = await repair_invalid(builder)
        await builder.drain()
        return report

    report = asyncio.run(start())

    assert report.acted
    assert sorted(report.dropped) == sorted([invalid, valid]) and report.rebuilt == [], report
    assert not builder.records, "a leftover was rebuilt"
    assert vector_indexes(storm_url) == {INDEX}, sorted(chunk_indexes(storm_url))


def test_a_reindex_killed_as_deadlock_victim_is_recorded_and_leaves_no_copy(
    storm_admin: httpx.Client, storm_url: str
) -> None:
    """The finding's other outcome, made on purpose: a session with an old snapshot queues for
    the maintenance lock the way a run used to (blocked in pg_advisory_lock); the holder's REINDEX
    CONCURRENTLY waits for that snapshot, and (the session's deadlock_timeout being long) it is
    the REINDEX that PostgreSQL kills. The run records it, and its ``_ccnew`` copy is dropped."""
    blocked = threading.Event()
    with psycopg.connect(storm_url) as waiter:
        waiter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        waiter.execute("SET deadlock_timeout = '120s'")  # so the REINDEX detects the cycle, not us
        waiter.execute("SELECT 1")  # the snapshot, older than the REINDEX's
        resp = storm_admin.post("/v3/system/maintenance/vacuum", json={"tables": ["chunks"], "reindex": True})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["results"]["id"]
        deadline = time.monotonic() + 60
        with psycopg.connect(storm_url, autocommit=True) as watch:
            while not watch.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted", (MAINTENANCE_LOCK_ID,)
            ).fetchone():
                assert time.monotonic() < deadline, "the run never took the maintenance lock"
                time.sleep(0.01)

        def queue() -> None:
            waiter.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_ID,))
            blocked.set()

        t = threading.Thread(target=queue)
        t.start()
        run = wait_for_run(storm_admin, run_id)
        t.join(60)
        assert blocked.is_set()
        waiter.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_ID,))

    child = storm_admin.get("/v3/system/maintenance", params={"parent_id": run["id"]}).json()["results"][0]
    assert child["status"] == "failed" and "deadlock" in child["error"], child
    indexes = chunk_indexes(storm_url)
    assert not [n for n in indexes if LEFTOVER.search(n)], sorted(indexes)
    assert vector_indexes(storm_url) == {INDEX} and indexes[INDEX] == ("hnsw", True), sorted(indexes)
    assert [i["index"] for i in child["items"] if i["status"] == "failed"] == [INDEX], child["items"]
    assert [i["index"] for i in child["items"] if i["status"] == "dropped"] == [f"{INDEX}_ccnew"], child["items"]
