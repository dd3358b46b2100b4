"""ragkeep's own schema on a real Citus cluster: migrated by ``prepare_schema``, distributed by
``ragkeep.db.distribute``, written by the ingest store and searched by ``run_search``, with the
same owner_stats and the same search results as a single-node database loaded the same way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async
from psycopg import sql

from ragkeep.config import SearchConfig
from ragkeep.db import citus
from ragkeep.db.database import prepare_schema
from ragkeep.db.distribute import DISTRIBUTED_TABLES, REFERENCE_TABLES, DistributeError, distribute
from ragkeep.ingest import store
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner
from ragkeep.search.queries import Kind, Strategy
from ragkeep.search.scope import Scope
from ragkeep.search.service import run_search

pytestmark = pytest.mark.db

DIM = 384
MODEL = "all-MiniLM-L6-v2"
A, B, C = (uuid.UUID(int=i, version=4) for i in (1, 2, 3))
SHARED = uuid.UUID(int=99, version=4)  # a collection of A's that B is a member of
QUERY = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)


def doc_id(owner: uuid.UUID, n: int) -> uuid.UUID:
    return uuid.UUID(int=owner.int * 1000 + n, version=4)


def texts(owner: uuid.UUID, n: int) -> list[str]:
    """Six chunks; "lambda" a different number of times in every chunk of the data set, so that
    full-text ranks never tie (ties are broken by chunk id, which differs between two loads)."""
    base = (owner.int % 1000) * 100 + n * 10
    return [f"{' '.join(['lambda'] * (1 + (base + k) % 37))} chunk {base + k} of {owner.int % 1000}" for k in range(6)]


async def ingest(conn: psycopg.AsyncConnection, owner: uuid.UUID, n: int, collections: list[uuid.UUID]) -> None:
    doc = doc_id(owner, n)
    chunk_texts = texts(owner, n)
    await store.insert_pending(
        conn, owner_id=owner, document_id=doc, collection_ids=collections, document_type="txt", title=f"doc {n}",
        metadata={"n": n}, size_in_bytes=100, content_hash=hashlib.sha256(repr(chunk_texts).encode()).hexdigest(),
    )
    vectors = np.random.default_rng(owner.int % 1000 * 10 + n).standard_normal((6, DIM)).astype(np.float32)
    await store.store_chunks(
        conn, owner_id=owner, document_id=doc, collection_ids=collections, texts=chunk_texts,
        metadatas=[{"n": n, "k": k} for k in range(6)], embeddings=vectors,
    )


async def load(url: str) -> None:
    """Three owners' documents, then each kind of delete and a re-ingest, through the store."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await register_vector_async(conn)
        for owner in (A, B, C):
            for n in range(3):
                await ingest(conn, owner, n, [SHARED] if owner == A and n == 2 else [])
        assert await store.delete_document(conn, A, doc_id(A, 0))
        cur = await conn.execute("SELECT id FROM chunks WHERE owner_id = %s AND text = %s", (B, texts(B, 1)[2]))
        chunk = (await cur.fetchone() or [None])[0]
        assert await store.delete_chunk(conn, B, chunk)
        # A superuser's delete by filter across owners: every owner's document 1 but B's.
        deleted = await store.delete_documents_where(
            conn, None, sql.SQL("({x}.metadata->>'n')::int = 1 AND {x}.owner_id <> %(keep)s").format(
                x=sql.Identifier(store.DOCUMENT_FILTER_ALIAS)), {"keep": B},
        )
        assert sorted(deleted) == sorted([doc_id(A, 1), doc_id(C, 1)])
        # Re-ingest over a failed attempt that holds chunks.
        await conn.execute("UPDATE documents SET ingestion_status = 'failed' WHERE owner_id = %s AND id = %s",
                           (B, doc_id(B, 2)))
        await conn.execute("UPDATE documents SET content_hash = 'old' WHERE owner_id = %s AND id = %s",
                           (B, doc_id(B, 2)))
        await ingest(conn, B, 2, [])
        await conn.execute("DELETE FROM users WHERE id = %s", (C,))  # cascades to C's rows and counts
    finally:
        await conn.close()


def stats(url: str) -> dict[uuid.UUID, tuple[int, int, int, int]]:
    """Per owner: owner_stats' (documents, chunks) and a fresh count(*) of each."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT owner_id, document_count, chunk_count FROM owner_stats").fetchall()
        return {
            o: (d, c,
                conn.execute("SELECT count(*) FROM documents WHERE owner_id = %s", (o,)).fetchone()[0],  # type: ignore[index]
                conn.execute("SELECT count(*) FROM chunks WHERE owner_id = %s", (o,)).fetchone()[0])  # type: ignore[index]
            for o, d, c in rows
        }


SCOPES = {
    "A pinned": Scope(A), "B pinned": Scope(B), "everything": Scope(None), "B with A's shared": Scope(B, (SHARED,)),
}


async def searches(url: str, explain: bool = False) -> dict[str, Any]:
    """Every kind of search in every scope shape, exact, by the planner, and through the index
    settings (iterative strategy without an index: the same rows); rows by text and score."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    results: dict[str, Any] = {}
    try:
        await register_vector_async(conn)
        for name, scope in SCOPES.items():
            for kind in Kind:
                for strategy in (Strategy.EXACT, Strategy.ITERATIVE, None):
                    async with conn.transaction():
                        out = await run_search(
                            conn, kind, scope, compile_filters({"k": {"$lt": 5}}), planner=Planner(), limit=7,
                            offset=1, query_text="lambda", query_vector=QUERY, config=SearchConfig(), strategy=strategy,
                            explain=explain and strategy is not None,
                        )
                    key = f"{name} {kind.value} {strategy.value if strategy else 'planned'}"
                    results[key] = [(r["text"], round(float(r["score"]), 9)) for r in out.rows]
                    if out.explain:
                        results[key + " explain"] = out.explain
    finally:
        await conn.close()
    return results


@pytest.fixture(scope="module")
def single_node(pg_url: str) -> str:
    """A database of its own on the single-node server, loaded like the cluster's."""
    name = f"single_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=name)
    prepare_schema(url, DIM, MODEL)
    with psycopg.connect(url) as conn:
        conn.cursor().executemany("INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, 'x')",
                         [(o, f"{o.hex}@ragkeep.test") for o in (A, B, C)])
    asyncio.run(load(url))
    return url


@pytest.fixture(scope="module")
def distributed(citus_cluster: citus.Cluster) -> tuple[str, list[tuple[str, int, int]]]:
    """The coordinator's database: migrated, users made, distributed (4 shards), then loaded."""
    url = citus_cluster.coordinator.url
    prepare_schema(url, DIM, MODEL)
    with psycopg.connect(url) as conn:
        conn.cursor().executemany("INSERT INTO users (id, email, hashed_password) VALUES (%s, %s, 'x')",
                         [(o, f"{o.hex}@ragkeep.test") for o in (A, B, C)])
    steps: list[tuple[str, int, int]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        distribute(conn, shard_count=4, progress=lambda step, done, total: steps.append((step, done, total)))
    asyncio.run(load(url))
    return url, steps


def test_distribute_makes_reference_and_colocated_tables(distributed) -> None:
    url, steps = distributed
    assert steps[-1] == ("distributed", len(steps) - 1, len(steps) - 1)
    assert [s for s, _, _ in steps[:2]] == ["drop chunks_owner_id_document_id_fkey", "reference table ragkeep_meta"]
    with psycopg.connect(url) as conn:
        kinds = dict(conn.execute(
            "SELECT logicalrelid::text, partmethod::text || repmodel::text FROM pg_dist_partition").fetchall())
        colocation = conn.execute(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid::text = ANY(%s)",
            (list(DISTRIBUTED_TABLES),),
        ).fetchone()[0]  # type: ignore[index]
        shards = conn.execute("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'chunks'::regclass").fetchone()
        fk = conn.execute("SELECT 1 FROM pg_constraint WHERE conname = 'chunks_owner_id_document_id_fkey'").fetchone()
    assert {t: kinds[t] for t in REFERENCE_TABLES} == dict.fromkeys(REFERENCE_TABLES, "nt")
    assert {t: kinds[t][0] for t in DISTRIBUTED_TABLES} == dict.fromkeys(DISTRIBUTED_TABLES, "h")
    assert colocation == 1 and shards == (4,) and fk is not None
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(DistributeError, match="already"):
        distribute(conn)


def test_distribute_refuses_a_database_without_citus(single_node: str) -> None:
    with psycopg.connect(single_node, autocommit=True) as conn, pytest.raises(DistributeError, match="citus extension"):
        distribute(conn)


def test_owner_stats_match_the_rows_on_the_shards(distributed, single_node: str) -> None:
    url, _ = distributed
    on_cluster = stats(url)
    assert set(on_cluster) == {A, B}  # C's row went with C
    for owner, (documents, chunks, counted_documents, counted_chunks) in on_cluster.items():
        assert (documents, chunks) == (counted_documents, counted_chunks), owner
    assert on_cluster == stats(single_node)
    assert on_cluster[A][:2] == (1, 6) and on_cluster[B][:2] == (3, 17)


def test_searches_return_what_a_single_node_returns(distributed, single_node: str) -> None:
    url, _ = distributed
    on_cluster = asyncio.run(searches(url))
    expected = asyncio.run(searches(single_node))
    assert on_cluster == expected
    # Not vacuous: each scope finds rows, and the shared scope reaches A's shared document.
    assert all(rows for rows in expected.values())
    shared = {text for text, _ in expected["B with A's shared semantic exact"]}
    assert shared & set(texts(A, 2)) and shared & set(texts(B, 0) + texts(B, 1) + texts(B, 2))


@pytest.fixture(scope="module")
def plans(distributed) -> dict[str, Any]:
    """The searches on the cluster, with EXPLAIN ANALYZE of each strategy given (not the planned ones)."""
    return asyncio.run(searches(distributed[0], explain=True))


def test_a_pinned_search_runs_on_one_shard(plans) -> None:
    pinned = json.dumps(plans["A pinned semantic exact explain"])
    everything = json.dumps(plans["everything semantic exact explain"])
    assert '"Task Count": 1,' in pinned
    assert '"Task Count": 4,' in everything


def test_index_settings_reach_the_workers(plans) -> None:
    """The search's SET LOCAL (enable_sort off, with citus.propagate_set_commands = 'local') is
    in force on the worker that plans the shard query: its Sort shows as disabled; the exact
    strategy sets nothing and its Sort is not."""
    assert '"Disabled": true' in json.dumps(plans["A pinned semantic iterative explain"])
    assert '"Disabled": true' not in json.dumps(plans["A pinned semantic exact explain"])


async def explain_after_refresh(url: str) -> str:
    """A planned (not forced) search across every shard, explained, by a planner whose directory
    is empty: the refresh (a local read of reference tables) and the EXPLAIN ANALYZE share a transaction."""
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        await register_vector_async(conn)
        out = await run_search(conn, Kind.SEMANTIC, Scope(None), compile_filters({}), planner=Planner(), limit=3,
                               query_vector=QUERY, config=SearchConfig(), explain=True)
        await conn.rollback()
        return json.dumps(out.explain)
    finally:
        await conn.close()


def test_explain_after_the_planner_refreshed_its_directory(distributed) -> None:
    assert '"Task Count": 4,' in asyncio.run(explain_after_refresh(distributed[0]))
