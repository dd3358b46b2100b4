"""The operator's figures on a distributed database: the coordinator's tables are empty shells, so
the index list, the storage sizes, VACUUM's dead tuples and the cache counters must be the shards'
sums. Storage quotas are checked here too (claims through the store on the distributed tables). Each figure
is compared with the shards' own, read here with ``run_command_on_shards`` (not the code's path).

A database of its own (Citus metadata is per database) on the session cluster, 4 shards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from ragkeep.config import LimitsConfig, SearchConfig
from ragkeep.db import citus
from ragkeep.db.database import prepare_schema
from ragkeep.db.distribute import distribute
from ragkeep.errors import QuotaExceeded
from ragkeep.indices.catalog import list_vector_indexes
from ragkeep.ingest import store
from ragkeep.maintenance import history
from ragkeep.maintenance.reindex import reindex_vector_indexes
from ragkeep.maintenance.vacuum import table_stats, vacuum_tables
from ragkeep.monitoring import housekeeping
from ragkeep.monitoring.database import cache_stats, relation_sizes
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner
from ragkeep.search.queries import Kind, Strategy
from ragkeep.search.scope import Scope
from ragkeep.search.service import run_search
from tests.search.synthetic import DIM, unit

pytestmark = pytest.mark.db

MODEL = "all-MiniLM-L6-v2"
OWNERS = [uuid.UUID(int=i, version=4) for i in (21, 22, 23)]
SIZES = {OWNERS[0]: 200, OWNERS[1]: 120, OWNERS[2]: 80}
INDEX = "ix_figures"
T = TypeVar("T")


def doc_of(owner: uuid.UUID) -> uuid.UUID:
    return uuid.UUID(int=owner.int + 1, version=4)


def run(fn: Callable[[psycopg.AsyncConnection], Awaitable[T]], url: str, autocommit: bool = True) -> T:
    async def go() -> T:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=autocommit)
        try:
            await register_vector_async(conn)
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


async def load(conn: psycopg.AsyncConnection) -> None:
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((4, DIM))
    for owner, n in SIZES.items():
        await store.insert_pending(
            conn, owner_id=owner, document_id=doc_of(owner), collection_ids=[], document_type="txt", title="t",
            metadata={}, size_in_bytes=100, content_hash=owner.hex,
        )
        await store.store_chunks(
            conn, owner_id=owner, document_id=doc_of(owner), collection_ids=[], texts=[f"chunk {i}" for i in range(n)],
            metadatas=[{"i": i} for i in range(n)], embeddings=unit(rng, n, centres),
        )


@pytest.fixture(scope="module")
def url(citus_cluster: citus.Cluster) -> str:
    """Migrated, distributed (4 shards), loaded through the store, an HNSW index on every shard,
    analyzed; autovacuum off for chunks (on the shards too) so that dead tuples wait for us."""
    url = citus.create_database(citus_cluster, f"figures_{uuid.uuid4().hex[:8]}")
    prepare_schema(url, DIM, MODEL)
    with psycopg.connect(url) as conn:
        conn.cursor().executemany("INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, 'x')",
                                  [(o, f"{o.hex[-4:]}@figures.test") for o in OWNERS])
    with psycopg.connect(url, autocommit=True) as conn:
        distribute(conn, shard_count=4)
    run(load, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX {INDEX} ON chunks USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ALTER TABLE chunks SET (autovacuum_enabled = false)")
        for table in ("chunks", "documents", "users"):
            conn.execute(f"ANALYZE {table}")
    return url


def shard_sum(url: str, table: str, command: str) -> int:
    """``command`` (``%s``: the shard) on every shard of ``table``, its integer results summed."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT success, result FROM run_command_on_shards(%s, %s)", (table, command)).fetchall()
    assert rows and all(ok for ok, _ in rows), rows
    return sum(int(result) for _, result in rows)


def shell(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


_SHARD_INDEX_SIZE = (f"SELECT pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                     f"WHERE i.indrelid = '%s'::regclass AND starts_with(c.relname, '{INDEX}_')")


def test_index_list_sums_the_shards(url: str) -> None:
    rows, total = run(lambda c: list_vector_indexes(c, table="chunks"), url)
    assert total == 1
    (row,) = rows
    assert row["name"] == INDEX and row["status"] == "valid" and row["progress"] is None
    on_shards = shard_sum(url, "chunks", _SHARD_INDEX_SIZE)
    assert row["size_in_bytes"] == on_shards
    assert row["size_in_bytes"] > shell(url, f"SELECT pg_relation_size('{INDEX}')")
    # HNSW's build records the rows it indexed: every chunk, on some shard.
    assert row["row_estimate"] == sum(SIZES.values())


def test_storage_sizes_sum_the_shards(url: str) -> None:
    sizes = {r["relation"]: r for r in run(relation_sizes, url)}
    chunks_bytes = shard_sum(url, "chunks", "SELECT pg_table_size('%s')")
    assert sizes["chunks"]["bytes"] == chunks_bytes > shell(url, "SELECT pg_table_size('chunks')")
    assert sizes["chunks"]["est_rows"] == sum(SIZES.values())
    assert sizes["documents"]["bytes"] == shard_sum(url, "documents", "SELECT pg_table_size('%s')")
    assert sizes["documents"]["est_rows"] == len(OWNERS)
    assert sizes[INDEX]["bytes"] == shard_sum(
        url, "chunks", _SHARD_INDEX_SIZE.replace("pg_relation_size", "pg_total_relation_size"))
    assert sizes[INDEX]["table_name"] == "chunks" and sizes[INDEX]["kind"] == "index"
    # A reference table: one shard, its size counted once (not once per node holding a copy).
    assert sizes["users"]["bytes"] == shard_sum(url, "users", "SELECT pg_table_size('%s')")
    assert sizes["users"]["est_rows"] == len(OWNERS)
    # A coordinator-only table keeps its own figure.
    assert sizes["maintenance_runs"]["bytes"] == shell(url, "SELECT pg_table_size('maintenance_runs')")

    # The snapshot stores the same figures.
    slot = housekeeping.slot_of(datetime.now(UTC), 5)
    assert run(lambda c: housekeeping.take_snapshot(c, slot), url) == len(sizes)
    with psycopg.connect(url) as conn:
        stored = dict(conn.execute("SELECT relation, bytes FROM storage_sizes WHERE taken_at = %s",  # type: ignore[arg-type]
                                   (slot,)).fetchall())
    assert stored["chunks"] == chunks_bytes and stored[INDEX] == sizes[INDEX]["bytes"]


def dead_tuples(url: str) -> int:
    return shard_sum(url, "chunks", "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = '%s'::regclass")


def test_vacuum_reads_dead_tuples_on_the_workers(url: str, citus_cluster: citus.Cluster) -> None:
    removed = SIZES[OWNERS[0]] + SIZES[OWNERS[1]]
    run(lambda c: store.delete_document(c, OWNERS[0], doc_of(OWNERS[0])), url)
    run(lambda c: store.delete_document(c, OWNERS[1], doc_of(OWNERS[1])), url)
    # The workers' backends published their counts when the connection above closed them; wait
    # for the statistics to show them (not a timing assertion: the figure itself is checked).
    deadline = time.monotonic() + 60
    while dead_tuples(url) < removed and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dead_tuples(url) == removed
    assert shell(url, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'chunks'") == 0

    stats = run(lambda c: table_stats(c, ["chunks"]), url)["chunks"]
    assert stats.dead_tuples == removed and stats.live_tuples == SIZES[OWNERS[2]]
    assert stats.nodes is not None and len(stats.nodes) == len(citus_cluster.workers)
    assert sum(n["dead_tuples"] for n in stats.nodes.values()) == removed

    async def vacuum(conn: psycopg.AsyncConnection) -> dict[str, Any]:
        run_row = await history.claim(conn, task="vacuum", trigger="manual", options=history.RunOptions(),
                                      tables=["chunks"], status="running")
        assert run_row is not None
        items, _ = await vacuum_tables(conn, ["chunks"], analyze=True, full=False)
        await history.finish(conn, run_row["id"], status="succeeded", items=items)
        recorded = await history.get_run(conn, run_row["id"])
        assert recorded is not None
        return recorded

    recorded = run(vacuum, url)
    (item,) = recorded["items"]
    assert item["status"] == "done", item
    assert item["dead_tuples_before"] == removed and item["dead_tuples_after"] == 0
    assert recorded["dead_tuples_before"] == removed and recorded["dead_tuples_after"] == 0
    assert set(item["nodes"]) == set(stats.nodes)
    assert sum(n["dead_tuples_before"] for n in item["nodes"].values()) == removed
    assert all(n["dead_tuples_after"] == 0 for n in item["nodes"].values())
    assert dead_tuples(url) == 0


def test_reindex_items_measure_the_shards(url: str) -> None:
    """REINDEX CONCURRENTLY of the shell rebuilds every shard's copy; the item's sizes before and
    after are the shards' sums (both from the catalog)."""
    before = shard_sum(url, "chunks", _SHARD_INDEX_SIZE)
    items = run(reindex_vector_indexes, url)
    (item,) = [i for i in items if i.get("index") == INDEX]
    assert item["status"] == "done", item
    assert item["bytes_before"] == before
    assert item["bytes_after"] == shard_sum(url, "chunks", _SHARD_INDEX_SIZE) > 0
    assert item["bytes_reclaimed"] == item["bytes_before"] - item["bytes_after"]


def test_index_list_shows_a_shard_still_building(url: str, citus_cluster: citus.Cluster) -> None:
    """A shard's copy held up by a writer on its worker: the index is building, with the shard's
    progress, until the writer commits; then valid on every shard."""
    with psycopg.connect(url) as conn:
        shard, port = conn.execute(
            "SELECT s.shardid, n.nodeport FROM pg_dist_shard s "
            "JOIN pg_dist_placement p ON p.shardid = s.shardid JOIN pg_dist_node n ON n.groupid = p.groupid "
            "WHERE s.logicalrelid = 'chunks'::regclass ORDER BY s.shardid LIMIT 1").fetchone()  # type: ignore[misc]
    worker = next(w for w in citus_cluster.workers if w.port == port)
    worker_url = psycopg.conninfo.make_conninfo(worker.url, dbname=psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    blocker = psycopg.connect(worker_url)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE INDEX CONCURRENTLY ix_later ON chunks USING hnsw (embedding vector_l2_ops)")
        except BaseException as e:  # reported by the test below
            errors.append(e)

    thread = threading.Thread(target=build)
    try:
        blocker.execute("SET LOCAL citus.enable_manual_changes_to_shards = on")
        blocker.execute(f"LOCK TABLE chunks_{shard} IN ROW EXCLUSIVE MODE")
        thread.start()
        seen: dict[str, Any] | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not errors:
            rows, _ = run(lambda c: list_vector_indexes(c, table="chunks", name="ix_later"), url)
            if rows and rows[0]["status"] == "building" and rows[0]["progress"]:
                seen = rows[0]
                break
            time.sleep(0.2)
        assert not errors, errors
        assert seen is not None, "the index never showed as building"
        assert seen["progress"]["phase"].startswith("waiting for"), seen["progress"]
    finally:
        blocker.rollback()
        blocker.close()
        if thread.is_alive():
            thread.join()
    assert not errors, errors
    rows, _ = run(lambda c: list_vector_indexes(c, table="chunks", name="ix_later"), url)
    assert rows[0]["status"] == "valid" and rows[0]["progress"] is None
    assert rows[0]["size_in_bytes"] == shard_sum(url, "chunks", _SHARD_INDEX_SIZE.replace(INDEX, "ix_later"))


def test_warming_an_index_warms_every_shards_copy(url: str) -> None:
    """pg_prewarm of the coordinator's shell index loads nothing: each shard's copy is warmed."""
    from ragkeep.indices.warm import Warmer

    state = asyncio.run(Warmer(url).warm(INDEX))
    assert state.state == "warm", state.error
    on_shards = shard_sum(url, "chunks", _SHARD_INDEX_SIZE) // 8192
    assert state.blocks == on_shards and state.blocks > shell(url, f"SELECT pg_relation_size('{INDEX}')") // 8192


# -- storage quotas on the distributed database ----------------------------------------------------


def add_user(url: str, owner: uuid.UUID) -> None:
    """A user made after distribution (``users`` is a reference table); no owner_stats row yet:
    the first claim under limits makes it (``storage.lock_owner``)."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, 'x')",
                     (owner, f"{owner.hex}@quota.test"))


async def claim(url: str, owner: uuid.UUID, n: int, limits: LimitsConfig) -> None:
    """Owner's claim number ``n`` through the store, with limits, on a connection of its own."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await store.insert_pending(
            conn, owner_id=owner, document_id=uuid.UUID(int=(owner.int >> 16 << 16) + n, version=4),
            collection_ids=[], document_type="txt", title=f"q{n}", metadata={}, size_in_bytes=10,
            content_hash=f"{owner.hex}-{n}", limits_config=limits,
        )
    finally:
        await conn.close()


def owner_documents(url: str, owner: uuid.UUID) -> tuple[int, int]:
    """The owner's documents counted, and owner_stats' document_count."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM documents WHERE owner_id = %(o)s), "
                           "(SELECT document_count FROM owner_stats WHERE owner_id = %(o)s)", {"o": owner}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_document_quota_holds_on_citus(url: str) -> None:
    """max_documents = 3: three claims pass, the fourth is refused and writes nothing."""
    owner = uuid.UUID(int=31 << 64, version=4)
    add_user(url, owner)
    limits = LimitsConfig(max_documents=3)
    for n in range(3):
        asyncio.run(claim(url, owner, n, limits))
    assert owner_documents(url, owner) == (3, 3)
    with pytest.raises(QuotaExceeded) as refused:
        asyncio.run(claim(url, owner, 3, limits))
    assert refused.value.limit_name == "max_documents" and refused.value.used == 3
    assert owner_documents(url, owner) == (3, 3)


def test_concurrent_claims_never_pass_the_quota_on_citus(url: str) -> None:
    """Eight claims at once (separate connections, no owner_stats row yet) with max_documents = 3:
    exactly three pass, the others are refused, and the counts agree."""
    owner = uuid.UUID(int=32 << 64, version=4)
    add_user(url, owner)
    limits = LimitsConfig(max_documents=3)

    async def all_at_once() -> list[BaseException | None]:
        return await asyncio.gather(*(claim(url, owner, n, limits) for n in range(8)), return_exceptions=True)

    outcomes = asyncio.run(all_at_once())
    refused = [o for o in outcomes if o is not None]
    assert all(isinstance(o, QuotaExceeded) and o.limit_name == "max_documents" for o in refused), refused
    assert len(refused) == 5
    assert owner_documents(url, owner) == (3, 3)


# -- cache counters -------------------------------------------------------------------------------


async def a_few_searches(conn: psycopg.AsyncConnection) -> None:
    """Semantic searches through the HNSW index (iterative strategy) over every shard and pinned."""
    query = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    for scope in (Scope(None), Scope(OWNERS[2]), Scope(None)):
        async with conn.transaction():
            out = await run_search(conn, Kind.SEMANTIC, scope, compile_filters({}), planner=Planner(), limit=5,
                                   query_vector=query, config=SearchConfig(), strategy=Strategy.ITERATIVE)
        assert out.rows


_COPIES = f"relid = '%s'::regclass AND starts_with(indexrelname, '{INDEX}_')"
_SHARD_COUNTERS = {
    "scans": f"SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE {_COPIES}",
    "index_hit": f"SELECT coalesce(sum(idx_blks_hit), 0) FROM pg_statio_user_indexes WHERE {_COPIES}",
    "heap_hit": "SELECT heap_blks_hit FROM pg_statio_user_tables WHERE relid = '%s'::regclass",
    "indexes_hit": "SELECT idx_blks_hit FROM pg_statio_user_tables WHERE relid = '%s'::regclass",
}


def shard_counters(url: str) -> dict[str, int]:
    return {name: shard_sum(url, "chunks", command) for name, command in _SHARD_COUNTERS.items()}


def test_cache_counters_sum_the_shards(url: str) -> None:
    """After searches (the workers did the reads), the chunks and per-index counters of
    ``cache_stats`` (the /v3/system/stats and ragkeep_chunks_* figures) are the shards' sums."""
    run(a_few_searches, url)  # closing the connection ends its worker backends: they publish their counters
    deadline = time.monotonic() + 60
    while shard_counters(url)["scans"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    # Counters only grow: read the shards on both sides of cache_stats until nothing moved between.
    for _ in range(50):
        before = shard_counters(url)
        cache = run(cache_stats, url)
        if shard_counters(url) == before:
            break
    (index,) = [i for i in cache["chunk_indexes"] if i["index"] == INDEX]
    assert index["scans"] == before["scans"] > 0
    assert index["blks_hit"] == before["index_hit"] > 0
    assert index["method"] == "hnsw" and index["hit_ratio"] is not None
    assert index["bytes"] == shard_sum(url, "chunks", _SHARD_INDEX_SIZE)
    assert cache["chunks"]["heap"]["blks_hit"] == before["heap_hit"] > 0
    assert cache["chunks"]["indexes"]["blks_hit"] == before["indexes_hit"] >= index["blks_hit"]
    # The coordinator's shell saw none of it.
    assert shell(url, f"SELECT coalesce(idx_scan, 0) FROM pg_stat_user_indexes WHERE indexrelname = '{INDEX}'") == 0
