"""Dedicated capacity for a power user on a real Citus cluster: ``isolate_tenant`` gives one owner a
shard of their own (documents, chunks and owner_stats split together), moves it to the other
worker, and their pinned search then runs on that one shard with its copy of the global HNSW
index, returning what it returned before; the other owners' searches do not change.

The cluster is this module's own (coordinator + 2 workers): Citus metadata is per database, and
test_schema.py distributes the session cluster's database with 4 shards it counts; splitting
shards there would change what it sees.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from ragkeep.config import SearchConfig
from ragkeep.db import citus
from ragkeep.db.database import prepare_schema
from ragkeep.db.distribute import distribute
from ragkeep.errors import InvalidInput, NotFound
from ragkeep.indices.advice import advise
from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.isolation import isolate_tenant, owner_shard
from ragkeep.ingest import store
from ragkeep.monitoring.traffic import search_traffic
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner
from ragkeep.search.queries import Kind, Strategy
from ragkeep.search.scope import Scope
from ragkeep.search.service import run_search
from tests.search.synthetic import DIM, unit
from tests.support import make_settings
from tests.support.system import require_citus

pytestmark = pytest.mark.db

MODEL = "all-MiniLM-L6-v2"
OWNERS = [uuid.UUID(int=i, version=4) for i in (11, 12, 13)]
SIZES = {OWNERS[0]: 300, OWNERS[1]: 150, OWNERS[2]: 150}
QUERY = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
#: ef_search above every owner's row count: the HNSW scan is exhaustive, so its top-k is the
#: exact one whatever graph the split built on the new shard (results comparable before/after).
CONFIG = SearchConfig(ef_search=1000, exact_threshold=100)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[citus.Cluster]:
    require_citus()
    data_dir = tmp_path_factory.mktemp("citus-isolate") / "coordinator"
    try:
        yield citus.start_cluster(data_dir, 2, port=0, shared_buffers="64MB")
    finally:
        citus.stop_cluster(data_dir)


@pytest.fixture(scope="module")
def url(cluster: citus.Cluster) -> str:
    """Migrated, distributed (2 shards: some shard holds two of the three owners), loaded, with a
    global HNSW index (Citus creates it on every shard)."""
    url = cluster.coordinator.url
    prepare_schema(url, DIM, MODEL)
    with psycopg.connect(url) as conn:
        conn.cursor().executemany("INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, 'x')",
                                  [(o, f"{o.hex[-4:]}@isolate.test") for o in OWNERS])
    with psycopg.connect(url, autocommit=True) as conn:
        distribute(conn, shard_count=2)
    run(load(url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE INDEX ix_global ON chunks USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ANALYZE chunks")
    return url


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def load(url: str) -> None:
    """One document per owner through the ingest store (which keeps owner_stats on Citus)."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, DIM))
    conn = await _connect(url)
    try:
        for owner, n in SIZES.items():
            doc = uuid.UUID(int=owner.int + 1, version=4)
            await store.insert_pending(
                conn, owner_id=owner, document_id=doc, collection_ids=[], document_type="txt", title="power",
                metadata={}, size_in_bytes=100, content_hash=owner.hex,
            )
            await store.store_chunks(
                conn, owner_id=owner, document_id=doc, collection_ids=[], texts=[f"chunk {i}" for i in range(n)],
                metadatas=[{"i": i} for i in range(n)], embeddings=unit(rng, n, centres),
            )
    finally:
        await conn.close()


async def _connect(url: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await register_vector_async(conn)
    return conn


async def _search(url: str, owner: uuid.UUID, strategy: Strategy, explain: bool = False) -> tuple[list, Any]:
    conn = await _connect(url)
    try:
        async with conn.transaction():
            out = await run_search(conn, Kind.SEMANTIC, Scope(owner), compile_filters(None), planner=Planner(),
                                   limit=7, query_vector=QUERY, config=CONFIG, strategy=strategy, explain=explain)
        return [(str(r["id"]), round(float(r["score"]), 9)) for r in out.rows], out.explain
    finally:
        await conn.close()


def searches(url: str) -> dict[str, list]:
    return {f"{o} {s.value}": run(_search(url, o, s))[0] for o in OWNERS for s in (Strategy.EXACT, Strategy.ITERATIVE)}


async def _isolate(url: str, owner: uuid.UUID, node: str | None = None) -> dict[str, Any]:
    conn = await _connect(url)
    try:
        return await isolate_tenant(conn, owner, node=node, builder=IndexBuilder(url))
    finally:
        await conn.close()


async def _shard(url: str, owner: uuid.UUID, table: str = "chunks") -> dict[str, Any]:
    conn = await _connect(url)
    try:
        return await owner_shard(conn, owner, table)
    finally:
        await conn.close()


def on_shard(url: str, shard: int, command: str) -> str:
    """``command`` run by Citus on one shard of chunks (``%s``: the shard's name)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT result FROM run_command_on_shards('chunks', %s) WHERE shardid = %s",
                           (command, shard)).fetchone()
    assert row is not None
    return str(row[0])


def advice(url: str, tmp: Path) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        conn = await _connect(url)
        try:
            settings = make_settings(tmp, url, search={"exact_threshold": 100})
            return await advise(conn, settings, DIM, await search_traffic(conn))
        finally:
            await conn.close()

    return run(go())


def test_isolating_a_power_user_gives_them_a_shard_and_node_of_their_own(
    url: str, cluster: citus.Cluster, tmp_path: Path
) -> None:
    shards = {o: run(_shard(url, o))["shard_id"] for o in OWNERS}
    # The power user: the one that shares its shard with another owner (2 shards, 3 owners).
    power = next(o for o in OWNERS if list(shards.values()).count(shards[o]) > 1)
    before = searches(url)
    assert all(len(rows) == 7 for rows in before.values())
    candidate = {c["user_id"]: c for c in advice(url, tmp_path)["recommendation"]["isolation"]["candidates"]}
    assert OWNERS[0] in candidate and candidate[OWNERS[0]]["action"] == "isolate_shard"  # 300 of 600 vectors
    assert OWNERS[1] not in candidate and OWNERS[2] not in candidate  # 25% each
    assert candidate[OWNERS[0]]["done"] is False  # half the hash range is not a shard of one's own

    result = run(_isolate(url, power))
    assert result["mode"] == "citus" and result["isolated_now"] and result["moved_from"] is None
    new = result["shard_id"]
    assert new != shards[power] and result["shards"]["chunks"] == new
    with psycopg.connect(url) as conn:
        lo, hi = conn.execute("SELECT shardminvalue, shardmaxvalue FROM pg_dist_shard WHERE shardid = %s",
                              (new,)).fetchone()  # type: ignore[misc]
        assert lo == hi  # one hash value: this owner's
        # Co-located: documents and owner_stats were split with chunks (CASCADE).
        for table in ("documents", "owner_stats"):
            lo_t, hi_t = conn.execute(
                "SELECT shardminvalue, shardmaxvalue FROM pg_dist_shard WHERE shardid = %s",
                (result["shards"][table],)).fetchone()  # type: ignore[misc]
            assert (lo_t, hi_t) == (lo, hi), table
    assert on_shard(url, new, "SELECT count(DISTINCT owner_id)::text || ' ' || count(*) FROM %s") == \
        f"1 {SIZES[power]}"
    # The global index's copy is on the new shard, valid, and is all the owner's own.
    assert f"ix_global_{new}" in result["indexes"]

    after = searches(url)
    assert after == before
    rows, plan = run(_search(url, power, Strategy.ITERATIVE, explain=True))
    text = json.dumps(plan)
    assert rows == before[f"{power} iterative"]
    assert '"Task Count": 1,' in text and f"ix_global_{new}" in text, text[:3000]

    # Onto the other worker: the placement moves, the searches stay.
    source = result["node"]
    target = next(f"{citus.NODE_HOST}:{w.port}" for w in cluster.workers if f"{citus.NODE_HOST}:{w.port}" != source)
    moved = run(_isolate(url, power, node=target))
    assert moved["isolated_now"] is False and moved["moved_from"] == source and moved["node"] == target
    assert moved["shard_id"] == new and run(_shard(url, power))["node"] == target
    with psycopg.connect(url) as conn:
        ports = {t: conn.execute(
            "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = %s",
            (s,)).fetchone()[0] for t, s in moved["shards"].items()}  # type: ignore[index]
    assert set(ports.values()) == {int(target.rsplit(":", 1)[1])}  # the whole shard group moved
    assert searches(url) == before
    _, plan = run(_search(url, power, Strategy.ITERATIVE, explain=True))
    text = json.dumps(plan)
    assert '"Task Count": 1,' in text and f"ix_global_{new}" in text and f"port={target.rsplit(':', 1)[1]}" in text
    # Again: nothing to do.
    again = run(_isolate(url, power, node=target))
    assert (again["isolated_now"], again["moved_from"], again["shard_id"]) == (False, None, new)
    candidate = {c["user_id"]: c for c in advice(url, tmp_path)["recommendation"]["isolation"]["candidates"]}
    if power == OWNERS[0]:
        assert candidate[power]["done"] is True and candidate[power]["shard_id"] == new


def test_refusals(url: str) -> None:
    with pytest.raises(NotFound):
        run(_isolate(url, uuid.uuid4()))
    with pytest.raises(InvalidInput, match="not an active worker"):
        run(_isolate(url, OWNERS[1], node="127.0.0.1:1"))
    with pytest.raises(InvalidInput, match="host:port"):
        run(_isolate(url, OWNERS[1], node="nowhere"))
