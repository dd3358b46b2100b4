"""Reads on a real streaming standby (``ragkeep db start`` + ``db replica`` servers), through the
API of a server configured with ``read_urls``: a user's own upload is found by their next search
even while the standby's replay is paused; other users keep reading (on the standby while it is
within the lag bound, then on the primary); a stopped standby's reads move to the primary without
a failed request, and it is back in rotation once it runs again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from ragkeep.db.server import ServerInfo, create_replica, start_server, stop_server
from tests.support import ServerThread, TestUser, make_settings, register, wait_for

pytestmark = pytest.mark.db

MAX_LAG = 2.0

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerInfo, ServerInfo]]:
    root = tmp_path_factory.mktemp("standby")
    primary = start_server(root / "primary", port=0, shared_buffers="32MB")
    standby: ServerInfo | None = None
    try:
        standby = create_replica(primary.url, root / "standby", shared_buffers="32MB")
        yield primary, standby
    finally:
        if standby is not None:
            stop_server(standby.data_dir)
        stop_server(primary.data_dir)


@pytest.fixture(scope="module")
def server(pair: tuple[ServerInfo, ServerInfo], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    primary, standby = pair
    settings = make_settings(
        tmp_path_factory.mktemp("home"),
        primary.url,
        database={"read_urls": [standby.url], "max_replica_lag_seconds": MAX_LAG, "replica_check_seconds": 0.2},
        auth={"login_failures_per_address": 0},
        metrics={"prometheus_token": "t"},
    )
    with ServerThread(settings) as srv:
        wait_for(lambda: standby_state(srv)["in_rotation"] == 1.0, "the standby in rotation")
        yield srv


def standby_state(srv: ServerThread) -> dict[str, float]:
    text = httpx.get(f"{srv.base_url}/metrics", headers={"Authorization": "Bearer t"}).text
    out = {}
    for key, name in (("in_rotation", "ragkeep_standby_in_rotation"), ("lag", "ragkeep_standby_lag_seconds")):
        m = re.search(rf"^{name}\{{standby=\"[^\"]+\"\}} (\S+)$", text, re.M)
        out[key] = float(m.group(1)) if m else -1.0
    reads = dict(re.findall(r'^ragkeep_reads_total\{target="([^"]+)"\} (\S+)$', text, re.M))
    out["primary_reads"] = float(reads.pop("primary", -1))
    out["standby_reads"] = float(next(iter(reads.values()), -1))
    return out


def upload(user: TestUser, text: str) -> str:
    r = user.client.post("/v3/documents", data={"raw_text": text})
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["results"]["document_id"])


def search_ids(user: TestUser, query: str) -> set[str]:
    r = user.client.post("/v3/retrieval/search", json={"query": query, "search_mode": "basic"})
    assert r.status_code == 200, r.text
    return {c["document_id"] for c in r.json()["results"]["chunk_search_results"]}


@pytest.fixture
def paused(pair: tuple[ServerInfo, ServerInfo]) -> Iterator[None]:
    _, standby = pair
    with psycopg.connect(standby.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")


def test_reads_run_on_the_standby(server: ServerThread) -> None:
    user = register(server.base_url, "reader")
    before = standby_state(server)["standby_reads"]
    for path in ("/v3/documents", "/v3/chunks", "/v3/collections", f"/v3/system/users/{user.id}/stats"):
        r = user.client.get(path)
        assert r.status_code == 200, r.text
    assert standby_state(server)["standby_reads"] == before + 4  # nobody wrote: lists and stats on the standby


def test_a_users_upload_is_in_their_next_search_while_replay_is_paused(
    server: ServerThread, pair: tuple[ServerInfo, ServerInfo], paused: None
) -> None:
    writer, other = register(server.base_url, "writer"), register(server.base_url, "other")
    # Registering wrote on the primary; the standby cannot replay it: both users read on the primary.
    doc = upload(writer, "Zebra finches learn their songs from a tutor during a sensitive period.")
    for _ in range(5):
        assert doc in search_ids(writer, "how do zebra finches learn songs")
        r = writer.client.get("/v3/documents")
        assert doc in {d["id"] for d in r.json()["results"]}
    # Other users keep reading: every request answers while the standby is out of rotation.
    wait_for(lambda: standby_state(server)["in_rotation"] == 0.0, "the paused standby out of rotation")
    assert standby_state(server)["lag"] > MAX_LAG
    for _ in range(5):
        assert doc not in search_ids(other, "zebra finches")  # and never another user's document


def test_replayed_again_the_standby_serves_the_writer_too(server: ServerThread) -> None:
    writer = register(server.base_url, "later")
    doc = upload(writer, "Axolotls regenerate limbs, spinal cord and parts of the heart.")
    wait_for(lambda: standby_state(server)["in_rotation"] == 1.0, "the standby back in rotation")
    time.sleep(MAX_LAG * 2)  # the writer's mark expires: their reads may use the standby again
    before = standby_state(server)["standby_reads"]
    assert doc in search_ids(writer, "axolotl regeneration")
    assert standby_state(server)["standby_reads"] == before + 1


def test_a_stopped_standby_is_routed_around_and_used_again_once_back(
    server: ServerThread, pair: tuple[ServerInfo, ServerInfo]
) -> None:
    _, standby = pair
    user, reader = register(server.base_url, "survivor"), register(server.base_url, "reader")
    doc = upload(user, "Tardigrades survive desiccation by entering a state called cryptobiosis.")
    wait_for(lambda: standby_state(server)["in_rotation"] == 1.0, "the standby in rotation")
    before = standby_state(server)["standby_reads"]
    for _ in range(3):  # the reader has written nothing: the standby serves them, its pool keeps connections
        assert reader.client.get("/v3/documents").status_code == 200
    assert standby_state(server)["standby_reads"] == before + 3
    stop_server(standby.data_dir)
    try:
        for _ in range(20):  # from the first request after the stop: never a failure
            assert reader.client.get("/v3/documents").status_code == 200
            assert doc in search_ids(user, "tardigrade cryptobiosis")
        wait_for(lambda: standby_state(server)["in_rotation"] == 0.0, "the stopped standby out of rotation")
        for _ in range(5):
            assert doc in search_ids(user, "tardigrade cryptobiosis")
    finally:
        start_server(standby.data_dir)
    wait_for(lambda: standby_state(server)["in_rotation"] == 1.0, "the restarted standby back in rotation")
    assert doc in search_ids(user, "tardigrade cryptobiosis")


def test_vector_indexes_are_warmed_on_the_standby(server: ServerThread, pair: tuple[ServerInfo, ServerInfo]) -> None:
    """pg_prewarm on a standby loads the standby's own buffers: searches routed there start warm."""
    import asyncio

    from ragkeep.indices.build import IndexBuilder
    from ragkeep.indices.startup import warm_all

    primary, standby = pair
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS ix_standby_warm ON chunks USING hnsw (embedding vector_cosine_ops)")
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(standby.url, autocommit=True) as conn:
        wait_for(lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone() == (True,),
                 "the standby has the index")
        conn.execute("SELECT pg_buffercache_evict_relation('ix_standby_warm'::regclass)")
        builder = IndexBuilder(primary.url)
        names = asyncio.run(warm_all(builder, standby.url))
        assert "ix_standby_warm" in names
        cached = conn.execute(
            "SELECT count(*) FROM pg_buffercache b JOIN pg_class c ON c.relfilenode = b.relfilenode "
            "WHERE c.relname = 'ix_standby_warm' AND b.reldatabase = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"
        ).fetchone()[0]  # type: ignore[index]
    assert cached > 0
    assert builder.warmer.states == {}  # the primary's warm-up record is not the standby's
