"""``ragkeep db distribute`` on a database a ragkeep server filled through its API: users upload
documents (real embedding model), an HNSW index is built (``POST /v3/indices``), the server stops,
the command (a real process) distributes the database, and a server started again answers every
user's searches and lists as before; a pinned search runs on one shard with the shard's HNSW index;
a second run, and databases that cannot be distributed, are refused with exit code 2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async
from psycopg import sql

from ragkeep.config import SearchConfig
from ragkeep.db import citus
from ragkeep.db.database import prepare_schema
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner
from ragkeep.search.queries import Kind, Strategy
from ragkeep.search.scope import Scope
from ragkeep.search.service import run_search
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, login, make_settings, register
from tests.support.hostile import upload_ready

if TYPE_CHECKING:
    from tests.support import TestUser

pytestmark = pytest.mark.db

INDEX = "ix_test_distribute_hnsw"
TOPICS = [
    ["Otters hold hands while they sleep so that they do not drift apart on the water.",
     "Sea otters use stones as tools to crack open shellfish on their bellies."],
    ["The Rhine flows from the Swiss Alps to the North Sea through Germany and the Netherlands.",
     "Barges on the river carry coal, grain and containers between Basel and Rotterdam."],
    ["A sourdough starter is a culture of wild yeast and lactic acid bacteria in flour and water.",
     "Bakers feed the starter daily and use it to leaven bread with a slightly sour taste."],
]
QUERIES = ["sea otters", "river barges", "sourdough starter"]  # words of the texts: full-text finds them
KINDS = {
    "semantic": {},
    "full_text": {"use_fulltext_search": True, "use_semantic_search": False},
    "hybrid": {"use_hybrid_search": True},
}


def ragkeep(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ragkeep.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def snapshot(base_url: str, users: list[TestUser]) -> dict[str, Any]:
    """What each user sees (searches of every kind: ids in order; documents; their chunks), and a
    superuser's search across every user."""
    seen: dict[str, Any] = {}
    for n, user in enumerate(users):
        with login(base_url, user.email, user.password) as client:
            docs = client.get("/v3/documents", params={"limit": 100})
            assert docs.status_code == 200, docs.text
            seen[f"user{n} documents"] = docs.json()["results"]
            for doc in docs.json()["results"]:
                chunks = client.get(f"/v3/documents/{doc['id']}/chunks", params={"limit": 100})
                assert chunks.status_code == 200, chunks.text
                seen[f"user{n} chunks {doc['id']}"] = chunks.json()["results"]
            for query in QUERIES:
                for kind, settings in KINDS.items():
                    body = {"query": query, "search_settings": {"limit": 5, **settings}}
                    r = client.post("/v3/retrieval/search", json=body)
                    assert r.status_code == 200, r.text
                    seen[f"user{n} {kind} {query}"] = [h["id"] for h in r.json()["results"]["chunk_search_results"]]
    with login(base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        for query in QUERIES:
            r = admin.post("/v3/retrieval/search", json={"query": query, "search_settings": {"limit": 8}})
            assert r.status_code == 200, r.text
            seen[f"superuser {query}"] = [(h["id"], h["owner_id"]) for h in r.json()["results"]["chunk_search_results"]]
    return seen


def build_index(base_url: str) -> None:
    with login(base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        body = {"config": {"index_method": "hnsw", "index_arguments": {"m": 8, "ef_construction": 32},
                           "index_name": INDEX}}
        r = admin.post("/v3/indices", json=body)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 120
        while True:
            ix = admin.get(f"/v3/indices/vectors/{INDEX}").json()["results"]["index"]
            if ix["status"] == "valid" and ix["build"]["state"] == "succeeded":
                return
            assert time.monotonic() < deadline, f"index not built: {ix}"
            time.sleep(0.1)


async def pinned_plan(url: str, owner: uuid.UUID) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of one user's semantic search with the global index's iterative scan."""
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        await register_vector_async(conn)
        query = np.random.default_rng(3).standard_normal(384).astype(np.float32)
        out = await run_search(conn, Kind.SEMANTIC, Scope(owner), compile_filters({}), planner=Planner(), limit=3,
                               query_vector=query, config=SearchConfig(), strategy=Strategy.ITERATIVE, explain=True)
        await conn.rollback()
        assert out.explain is not None and out.rows
        return out.explain
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def database(citus_cluster: citus.Cluster) -> str:
    return citus.create_database(citus_cluster, f"cli_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def run(database: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Fill the database through a server, distribute it with the command, and look again."""
    settings = make_settings(tmp_path_factory.mktemp("home"), database, auth={"login_failures_per_address": 0})
    with ServerThread(settings) as server:
        users = [register(server.base_url, f"dist{n}") for n in range(3)]
        for n, user in enumerate(users):
            for k, text in enumerate(TOPICS[n] + TOPICS[(n + 1) % 3][:1]):
                upload_ready(user.client, f"{text} (document {k} of user {n}, {user.email})")
        build_index(server.base_url)
        before = snapshot(server.base_url, users)
    for user in users:
        user.client.close()
    distributed = ragkeep("db", "distribute", "--url", database, "--shard-count", "4")
    with ServerThread(settings) as server:
        after = snapshot(server.base_url, users)
    again = ragkeep("db", "distribute", "--url", database)
    return {"before": before, "after": after, "distributed": distributed, "again": again, "users": users}


def test_the_command_distributes_and_reports(run: dict[str, Any], database: str) -> None:
    done = run["distributed"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in 4 shards on 2 workers" in done.stdout
    assert f"vector index {INDEX} (hnsw): on 4 of 4 shards" in done.stdout, done.stdout
    assert "Restart every ragkeep server" in done.stdout
    with psycopg.connect(database) as conn:
        kinds = dict(conn.execute("SELECT logicalrelid::text, partmethod::text FROM pg_dist_partition").fetchall())
    assert kinds["chunks"] == kinds["documents"] == kinds["owner_stats"] == "h"
    assert kinds["users"] == "n"


def test_every_user_sees_what_they_saw_before(run: dict[str, Any]) -> None:
    before, after = run["before"], run["after"]
    assert after == before
    # Not vacuous: every search found chunks, each user has their documents and chunks.
    # (full-text finds a query's words in the users who hold that topic only)
    empty = [key for key, value in before.items() if not value]
    assert not [key for key in empty if "full_text" not in key], empty
    assert sum(bool(value) for key, value in before.items() if "full_text" in key) >= 3
    assert len([k for k in before if k.endswith("documents")]) == 3
    owners = {owner for key, hits in before.items() if key.startswith("superuser") for _, owner in hits}
    assert len(owners) > 1  # the superuser's top-k spans users, i.e. several shards


def test_a_pinned_search_runs_on_one_shard_with_its_hnsw_index(run: dict[str, Any], database: str) -> None:
    plan = json.dumps(asyncio.run(pinned_plan(database, run["users"][0].id)))
    assert '"Task Count": 1,' in plan
    assert f'"Index Name": "{INDEX}_' in plan, plan


def test_a_second_run_is_refused(run: dict[str, Any]) -> None:
    again = run["again"]
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already (partly) distributed" in again.stderr and "documents" in again.stderr


def test_databases_that_cannot_be_distributed_are_refused(citus_cluster: citus.Cluster, pg_url: str) -> None:
    name = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    no_citus = ragkeep("db", "distribute", "--url", psycopg.conninfo.make_conninfo(pg_url, dbname=name))
    assert no_citus.returncode == 2 and "citus extension is not installed" in no_citus.stderr, no_citus.stderr
    # Citus, but not joined to the workers: no schema first, then no workers.
    lonely = f"lonely_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(citus_cluster.coordinator.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(lonely)))
    url = psycopg.conninfo.make_conninfo(citus_cluster.coordinator.url, dbname=lonely)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION citus")
    empty = ragkeep("db", "distribute", "--url", url)
    assert empty.returncode == 2 and "no ragkeep schema" in empty.stderr, empty.stderr
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    alone = ragkeep("db", "distribute", "--url", url)
    assert alone.returncode == 2 and "no worker nodes" in alone.stderr, alone.stderr
    with psycopg.connect(url) as conn:  # refused before anything was done
        assert conn.execute("SELECT count(*) FROM pg_dist_partition").fetchone() == (0,)
