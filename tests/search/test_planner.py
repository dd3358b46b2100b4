"""The planner: exact scans for small scopes, an owner's partial index or the global index with an
iterative scan for large ones, never a short result, and the executed plan is the chosen one
(EXPLAIN ANALYZE of the statement that ran, and the indexes' own scan counters)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from ragkeep.config import SearchConfig
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner, filtered_owner, pinned_owner
from ragkeep.search.queries import Kind, Strategy
from ragkeep.search.scope import Scope
from ragkeep.search.service import IndexParams, SearchOutcome, run_search
from tests.search.synthetic import DIM, add_chunks, exact_top, unit
from tests.support import ServerThread, register

LARGE, SMALL, RARE = 3000, 60, 3
CONFIG = SearchConfig(exact_threshold=500)
GLOBAL = "ix_test_planner_global"
OWNER = "ix_test_planner_owner"


@pytest.fixture(scope="module")
def data(server: ServerThread, base_url, settings) -> Iterator[dict[str, Any]]:
    url = settings.database.url
    # The session server's planner: these tests plan with it, and tell it of indexes made behind
    # ragkeep's back (else seen within DIRECTORY_TTL), as a build through the API would.
    planner: Planner = server.services.planner
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, DIM))
    large, small = register(base_url, "planner-large"), register(base_url, "planner-small")
    tags = ["rare" if i % (LARGE // RARE) == 0 else "common" for i in range(LARGE)]
    add_chunks(url, large.id, unit(rng, LARGE, centres[:8]), tags)
    add_chunks(url, small.id, unit(rng, SMALL, centres[8:10]))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX {GLOBAL} ON chunks USING hnsw (embedding vector_cosine_ops)")
    planner.invalidate()  # indexes made behind ragkeep's back are otherwise seen within DIRECTORY_TTL
    queries = unit(rng, 5, centres[:8], spread=0.5)
    yield {"url": url, "large": large, "small": small, "queries": queries, "planner": planner}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX IF EXISTS {GLOBAL}")
        conn.execute(f"DROP INDEX IF EXISTS {OWNER}")
        conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (OWNER,))
    planner.invalidate()
    large.client.close()
    small.client.close()


def search(data: dict[str, Any], scope: Scope, q: np.ndarray, filters: dict | None = None, *,
           config: SearchConfig = CONFIG, kind: Kind = Kind.SEMANTIC, limit: int = 10, runs: int = 1,
           **kw: Any) -> SearchOutcome:
    async def go() -> SearchOutcome:
        async with await psycopg.AsyncConnection.connect(data["url"]) as conn:
            await register_vector_async(conn)
            for _ in range(runs):
                out = await run_search(conn, kind, scope, compile_filters(filters or {}), limit=limit,
                                       query_vector=q, query_text="synthetic", config=config,
                                       planner=data["planner"], **kw)
                await conn.commit()
            return out

    return asyncio.run(go())


def index_scans(plan: list[dict[str, Any]]) -> list[str]:
    """Names of the indexes the executed plan scanned. On Citus (tests/citus runs these tests on a
    distributed database) the scans are in the workers' plans of the shards, where an index is
    named ``<index>_<shardid>``: named here as the index they are a shard of."""
    found: list[str] = []

    def walk(node: Any, remote: bool) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, remote)
        elif isinstance(node, dict):
            if "Index Name" in node:
                found.append(re.sub(r"_\d+$", "", node["Index Name"]) if remote else node["Index Name"])
            for key, value in node.items():
                if key in ("Plans", "Plan", "Distributed Query", "Job", "Tasks", "Remote Plan"):
                    walk(value, remote or key == "Remote Plan")

    walk(plan, False)
    return found


def idx_scan(url: str, name: str) -> int:
    """Scans of index ``name``; on Citus the sum over its shards' copies (``<name>_<shardid>``)."""
    with psycopg.connect(url) as conn:
        citus = conn.execute("SELECT to_regclass('pg_dist_partition') IS NOT NULL").fetchone() == (True,)
        if citus and conn.execute("SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'chunks'::regclass").fetchone():
            # Citus fills %s with format(): a literal % is written %%.
            command = ("SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes "
                       f"WHERE relid = '%s'::regclass AND indexrelname LIKE '{name}\\_%%'")
            rows = conn.execute("SELECT result FROM run_command_on_shards('chunks', %s)", (command,)).fetchall()
            return sum(int(r[0]) for r in rows)
        row = conn.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (name,)).fetchone()
    return row[0] if row else 0


def test_filtered_owner_reads_the_pin_a_filter_puts_on_one_owner() -> None:
    u = uuid.uuid4()
    assert filtered_owner({"user_id": {"$eq": str(u)}}) == u
    assert filtered_owner({"owner_id": str(u)}) == u
    assert filtered_owner({"$and": [{"metadata.tag": "x"}, {"owner_id": {"$eq": str(u)}}]}) == u
    assert filtered_owner({"$or": [{"owner_id": str(u)}, {"owner_id": str(uuid.uuid4())}]}) is None
    assert filtered_owner({"owner_id": {"$in": [str(u)]}}) is None
    assert filtered_owner({"owner_id": {"$ne": str(u)}}) is None



def test_pinned_owner_is_the_one_owner_a_search_reads() -> None:
    """What the planner plans on and what the metrics call a single-owner (not cross-user) search."""
    me, other, coll = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pin = {"user_id": {"$eq": str(other)}}
    assert pinned_owner(Scope(me), {}) == me
    assert pinned_owner(Scope(None), {}) is None  # a superuser over everything
    assert pinned_owner(Scope(None), pin) == other  # a superuser searching one user
    assert pinned_owner(Scope(me, (coll,)), {}) is None  # own rows and a shared collection
    assert pinned_owner(Scope(me, (coll,)), {"owner_id": str(me)}) == me
    # A user naming someone else is planned on their own scope: the other's size must not leak.
    assert pinned_owner(Scope(me, (coll,)), pin) is None
    assert pinned_owner(Scope(me), pin) == me

def test_small_scope_is_an_exact_scan_with_every_true_neighbour(data) -> None:
    q, small = data["queries"][0], data["small"]
    out = search(data, Scope(small.id), q, explain=True)
    assert out.plan.strategy is Strategy.EXACT and out.plan.scope_size == SMALL
    assert GLOBAL not in index_scans(out.explain)
    assert [r["id"] for r in out.rows] == exact_top(data["url"], small.id, q)


def test_large_scope_uses_the_global_index_with_an_iterative_scan(data) -> None:
    url, large = data["url"], data["large"]
    recalls = []
    for q in data["queries"]:
        out = search(data, Scope(large.id), q, explain=True)
        assert out.plan.strategy is Strategy.ITERATIVE and not out.plan.fallback, out.plan
        assert out.plan.scope_size == LARGE
        assert GLOBAL in index_scans(out.explain)
        got = [r["id"] for r in out.rows]
        assert len(got) == 10
        recalls.append(len(set(got) & set(exact_top(url, large.id, q))) / 10)
        scores = [r["score"] for r in out.rows]
        assert scores == sorted(scores, reverse=True)  # re-sorted exactly after the relaxed scan
    assert np.mean(recalls) >= 0.9, recalls


def test_a_selective_filter_never_comes_back_short(data) -> None:
    """R2R's plan (index, no iterative scan) finds almost none of the 3 rare rows among thousands;
    the planner's answer holds all of them, in the exact order."""
    url, large, q = data["url"], data["large"], data["queries"][1]
    rare = {"metadata.tag": {"$eq": "rare"}}
    plain = SearchConfig(exact_threshold=500, iterative_scan="off", exact_fallback=False)
    r2r = search(data, Scope(large.id), q, rare, config=plain, strategy=Strategy.INDEX)
    assert len(r2r.rows) < RARE  # the failure this planner exists for (can fail if pgvector changes)
    out = search(data, Scope(large.id), q, rare)
    assert [r["id"] for r in out.rows] == exact_top(url, large.id, q, tag="rare")
    assert len(out.rows) == RARE
    no_fallback = SearchConfig(exact_threshold=500, exact_fallback=False, max_scan_tuples=50_000)
    iterative = search(data, Scope(large.id), q, rare, config=no_fallback)
    assert iterative.plan.strategy is Strategy.ITERATIVE
    assert {r["id"] for r in iterative.rows} == {r["id"] for r in out.rows}  # iterative scan alone finds them


def test_hybrid_over_a_large_scope_matches_the_exact_semantic_ranks(data) -> None:
    large, q = data["large"], data["queries"][2]
    out = search(data, Scope(large.id), q, kind=Kind.HYBRID, limit=10)
    exact = search(data, Scope(large.id), q, kind=Kind.HYBRID, limit=10, strategy=Strategy.EXACT)
    assert out.plan.strategy is Strategy.ITERATIVE
    assert out.semantic_found == 10
    overlap = {r["id"] for r in out.rows} & {r["id"] for r in exact.rows}
    assert len(overlap) >= 9


@pytest.fixture
def ef_index(data) -> Iterator[str]:
    """The large user's own partial index: a plain scan of it returns exactly ef_search of the
    user's rows (on the global index, other users' vectors could take every candidate slot)."""
    url, large, name = data["url"], data["large"], "ix_test_planner_ef"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {name} ON chunks USING hnsw (embedding vector_cosine_ops) "
            f"WHERE owner_id = '{large.id}'::uuid"
        )
        conn.execute("INSERT INTO tenant_indexes (index_name, owner_id, measure) VALUES (%s, %s, 'cosine_distance')",
                     (name, large.id))
    data["planner"].invalidate()
    yield name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {name}")
        conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (name,))
    data["planner"].invalidate()


def test_ef_search_is_applied_for_the_transaction_only(data, ef_index) -> None:
    """pgvector's plain HNSW scan returns at most ef_search rows: the setting reached the scan."""
    url, large, q = data["url"], data["large"], data["queries"][3]
    plain = SearchConfig(exact_threshold=500, iterative_scan="off", exact_fallback=False)
    assert len(search(data, Scope(large.id), q, config=plain, index=IndexParams(ef_search=4)).rows) == 4
    assert len(search(data, Scope(large.id), q, config=plain, index=IndexParams(ef_search=40)).rows) == 10

    async def setting_after() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await register_vector_async(conn)
            await run_search(conn, Kind.SEMANTIC, Scope(large.id), compile_filters({}), limit=10, query_vector=q,
                             config=CONFIG, index=IndexParams(ef_search=77), planner=data["planner"])
            inside = (await (await conn.execute("SELECT current_setting('hnsw.ef_search')")).fetchone())[0]
            await conn.commit()
            after = (await (await conn.execute("SELECT current_setting('hnsw.ef_search')")).fetchone())[0]
            return inside, after

    assert asyncio.run(setting_after()) == ("77", "40")


def test_promoted_owner_uses_its_partial_index_even_after_many_executions(data) -> None:
    url, large, small, q = data["url"], data["large"], data["small"], data["queries"][4]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {OWNER} ON chunks USING hnsw (embedding vector_cosine_ops) "
            f"WHERE owner_id = '{large.id}'::uuid"
        )
        conn.execute("INSERT INTO tenant_indexes (index_name, owner_id, measure) VALUES (%s, %s, 'cosine_distance')",
                     (OWNER, large.id))
    data["planner"].invalidate()
    out = search(data, Scope(large.id), q, explain=True)
    assert out.plan.strategy is Strategy.OWNER_INDEX
    assert index_scans(out.explain) == [OWNER]
    assert len({r["id"] for r in out.rows} & set(exact_top(url, large.id, q))) >= 9
    # psycopg prepares a statement after 5 runs; a generic plan could not use the partial index.
    before = idx_scan(url, OWNER)
    search(data, Scope(large.id), q, runs=8)
    after = idx_scan(url, OWNER)
    assert after - before == 8
    # A superuser pinning the search to this owner gets the same plan; another owner does not.
    pinned = search(data, Scope(None), q, {"user_id": {"$eq": str(large.id)}}, explain=True)
    assert pinned.plan.strategy is Strategy.OWNER_INDEX and pinned.plan.scope_size == LARGE
    assert index_scans(pinned.explain) == [OWNER]
    other = search(data, Scope(None), q, {"user_id": {"$eq": str(small.id)}})
    assert other.plan.strategy is Strategy.EXACT and other.plan.scope_size == SMALL
    assert [r["id"] for r in other.rows] == exact_top(url, small.id, q)
    # An invalid (or dropped) index is not chosen.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {OWNER}")
    data["planner"].invalidate()
    assert search(data, Scope(large.id), q).plan.strategy is Strategy.ITERATIVE


def test_unfiltered_superuser_scope_counts_every_vector(data) -> None:
    url, q = data["url"], data["queries"][0]
    out = search(data, Scope(None), q)
    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert out.plan.scope_size == total and out.plan.strategy is Strategy.ITERATIVE


def test_api_applies_r2r_chunk_settings_ef_search(data, ef_index, settings, tmp_path) -> None:
    """Through the API: R2R's search_settings.chunk_settings.ef_search reaches the index scan (a
    plain HNSW scan returns at most ef_search rows), on a server configured to plan that way."""
    from tests.support import ServerThread, login, make_settings

    plain = make_settings(tmp_path, settings.database.url,
                          search={"exact_threshold": 500, "iterative_scan": "off", "exact_fallback": False})
    large = data["large"]
    with ServerThread(plain) as srv, login(srv.base_url, large.email, large.password) as client:
        for ef, expected in ((3, 3), (40, 10)):
            body = {"query": "anything", "search_settings": {"limit": 10, "chunk_settings": {"ef_search": ef}}}
            r = client.post("/v3/retrieval/search", json=body)
            assert r.status_code == 200, r.text
            assert len(r.json()["results"]["chunk_search_results"]) == expected
        bad = client.post(
            "/v3/retrieval/search", json={"query": "x", "search_settings": {"chunk_settings": {"ef_search": 0}}}
        )
        assert bad.status_code == 422 and "ef_search" in bad.text


def test_naming_another_owner_does_not_plan_on_their_count(data) -> None:
    """A user who pins the search to someone else's id sees none of their rows (the scope) and must
    not learn their size either: the plan, the recorded scope size and so the latency follow the
    caller's own scope, not the named owner's."""
    large, small, q = data["large"], data["small"], data["queries"][0]
    out = search(data, Scope(small.id), q, {"owner_id": {"$eq": str(large.id)}})
    assert out.rows == []
    assert out.plan.strategy is Strategy.EXACT and out.plan.scope_size in (0, SMALL)
    assert out.plan.scope_size != LARGE
