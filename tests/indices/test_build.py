"""Builds through /v3/indices: progress while building, the memory plan, warming, tenant promotion."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ragkeep.config import IndicesConfig
from tests.indices.seed import seeded

ROWS = 12_000


@pytest.fixture(scope="module")
def tenant(base_url: str, settings) -> Iterator[uuid.UUID]:
    """A user who owns ROWS vectors (written directly; see seed.py)."""
    from tests.support import register

    user = register(base_url, "ixtenant")
    with seeded(settings.database.url, user.id, ROWS):
        yield user.id
    user.client.close()


def _get(admin, name: str) -> dict:
    r = admin.get(f"/v3/indices/vectors/{name}")
    assert r.status_code == 200, r.text
    return r.json()["results"]["index"]


def _wait(admin, name: str, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ix = _get(admin, name)
        if until(ix):
            return ix
        time.sleep(0.1)
    raise AssertionError(f"index {name}: condition not reached; last state {ix}")


def _drop(settings, name: str) -> None:
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (name,))


def test_build_shows_progress_plan_and_warms(admin, tenant, settings) -> None:
    name = "ix_test_progress"
    body = {"config": {"index_method": "hnsw", "index_arguments": {"m": 16, "ef_construction": 128},
                       "index_name": name}}
    try:
        r = admin.post("/v3/indices", json=body)
        assert r.status_code == 202, r.text
        created = r.json()["results"]
        plan = created["build"]
        assert created["index_name"] == name and plan["warning"] is None
        assert plan["rows"] >= ROWS and plan["dimension"] > 0 and plan["parallel_workers"] >= 0
        assert plan["maintenance_work_mem_mb"] * 2**20 >= plan["estimate_bytes"]
        # While the build runs, GET shows pg_stat_progress_create_index's phase and counters.
        seen = _wait(admin, name, lambda ix: ix["progress"] is not None or ix["status"] == "valid")
        assert seen["status"] == "building", "the build finished before any progress was seen"
        assert seen["progress"]["phase"] and seen["build"]["state"] == "building"
        assert {"tuples_done", "blocks_done", "blocks_total", "percent"} <= set(seen["progress"])
        ix = _wait(admin, name, lambda ix: ix["status"] == "valid" and ix["build"]["state"] == "succeeded")
        assert ix["progress"] is None and ix["build"]["error"] is None
        # The planned memory held the whole graph: pgvector did not fall back to on-disk inserts.
        assert not any("no longer fits" in n for n in ix["build"]["notices"]), ix["build"]["notices"]
        # After the build the index is warmed, and pg_buffercache sees it in shared buffers.
        ix = _wait(admin, name, lambda ix: (ix["warm"] or {}).get("state") == "warm")
        assert ix["warm"]["blocks"] > 0 and ix["warm"]["warmed_at"]
        assert ix["shared_buffers"]["index_blocks"] > 0 and ix["shared_buffers"]["share"] > 0.9
        listed = admin.get("/v3/indices").json()["results"]["indices"]
        assert any(i["index"]["name"] == name and i["index"]["warm"]["state"] == "warm" for i in listed)
    finally:
        _drop(settings, name)


def test_warm_on_demand_refills_shared_buffers(admin, make_user, settings) -> None:
    name = "ix_test_warm"
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {name} ON chunks USING hnsw (embedding vector_l2_ops) WITH (m = 4, ef_construction = 8)"
        )
    try:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            # Evict the index (pg_buffercache 1.5+): the list must then show a cold index.
            conn.execute("SELECT pg_buffercache_evict(bufferid) FROM pg_buffercache "
                         "WHERE relfilenode = pg_relation_filenode(%s::regclass)", (name,))
        cold = _get(admin, name)
        assert cold["shared_buffers"]["share"] in (0, None) or cold["shared_buffers"]["cached_blocks"] == 0
        assert make_user().client.post(f"/v3/indices/vectors/{name}/warm").status_code == 403
        r = admin.post(f"/v3/indices/vectors/{name}/warm")
        assert r.status_code == 200, r.text
        ix = r.json()["results"]["index"]
        assert ix["warm"]["state"] == "warm" and ix["warm"]["blocks"] == ix["shared_buffers"]["index_blocks"]
        assert ix["shared_buffers"]["share"] == 1.0
        assert admin.post("/v3/indices/vectors/no_such_index/warm").status_code == 404
    finally:
        _drop(settings, name)


def test_tenant_promotion_builds_a_registered_partial_index(admin, tenant, settings) -> None:
    r = admin.post("/v3/indices", json={
        "config": {"index_method": "hnsw", "index_arguments": {"m": 8, "ef_construction": 32}},
        "filters": {"owner_id": {"$eq": str(tenant)}},
    })
    assert r.status_code == 202, r.text
    name = r.json()["results"]["index_name"]
    try:
        assert name.startswith("ix_vector_cosine_ops_hnsw__embedding_") and name.endswith("_" + tenant.hex[:8])
        assert r.json()["results"]["owner_id"] == str(tenant)
        # The plan counted this owner's rows, not the whole table.
        assert r.json()["results"]["build"]["rows"] == ROWS
        ix = _wait(admin, name, lambda ix: ix["status"] == "valid")
        assert ix["owner_id"] == str(tenant) and str(tenant) in ix["predicate"]
        with psycopg.connect(settings.database.url) as conn:
            indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()[0]
            registered = conn.execute("SELECT owner_id, measure FROM tenant_indexes WHERE index_name = %s",
                                      (name,)).fetchone()
        assert f"WHERE (owner_id = '{tenant}'::uuid)" in indexdef
        assert registered == (tenant, "cosine_distance")
        assert admin.delete(f"/v3/indices/vectors/{name}").status_code == 200
        with psycopg.connect(settings.database.url) as conn:
            assert conn.execute("SELECT 1 FROM tenant_indexes WHERE index_name = %s", (name,)).fetchone() is None
    finally:
        _drop(settings, name)


@pytest.mark.parametrize("where", ["config", "top"])
@pytest.mark.parametrize("filters", ["user_id_eq", "bare"])
def test_owner_filter_spellings(admin, make_user, settings, where: str, filters: str) -> None:
    user = make_user()
    f = {"user_id": {"$eq": str(user.id)}} if filters == "user_id_eq" else {"owner_id": str(user.id)}
    name = f"ix_test_owner_{where}_{filters}"
    config = {"index_method": "hnsw", "index_arguments": {"m": 4, "ef_construction": 8}, "index_name": name}
    body = {"config": {**config, "filters": f}} if where == "config" else {"config": config, "filters": f}
    try:
        r = admin.post("/v3/indices", json=body)
        assert r.status_code == 202, r.text
        ix = _wait(admin, name, lambda ix: ix["status"] == "valid")
        assert ix["owner_id"] == str(user.id)
    finally:
        _drop(settings, name)


@pytest.mark.parametrize(
    "filters, status, field",
    [
        ({"owner_id": {"$in": ["00000000-0000-0000-0000-000000000001"]}}, 422, "filters.owner_id"),
        ({"owner_id": {"$eq": "not-a-uuid'); DROP TABLE chunks;--"}}, 422, "filters.owner_id"),
        ({"metadata.team": {"$eq": "x"}}, 422, "filters"),
        ({"owner_id": {"$eq": str(uuid.UUID(int=1))}, "user_id": {"$eq": str(uuid.UUID(int=1))}}, 422, "filters"),
        ({"$or": [{"owner_id": {"$eq": str(uuid.UUID(int=1))}}]}, 422, "filters"),
        ({"owner_id": 42}, 422, "filters.owner_id"),
        ({"owner_id": {"$eq": str(uuid.uuid4())}}, 404, "filters"),
    ],
)
def test_bad_owner_filters(admin, settings, filters: dict, status: int, field: str) -> None:
    r = admin.post("/v3/indices", json={"config": {"index_name": "ix_test_never"}, "filters": filters})
    assert r.status_code == status, r.text
    assert field in r.json()["detail"]["message"]
    with psycopg.connect(settings.database.url) as conn:
        assert conn.execute("SELECT 1 FROM pg_class WHERE relname = 'ix_test_never'").fetchone() is None


def test_cap_too_small_warns_in_the_response(admin, server, tenant, settings) -> None:
    """A cap below the estimate: the POST answer says so and what to do. The build is then
    cancelled, which also shows a failed build's outcome in GET."""
    builder = server.services.indexes
    saved = builder.config
    builder.config = IndicesConfig(build_memory_cap_mb=64, prewarm=False)
    name = "ix_test_capped"
    try:
        r = admin.post(
            "/v3/indices", json={"config": {"index_name": name, "index_arguments": {"m": 100, "ef_construction": 200}}}
        )
        assert r.status_code == 202, r.text
        res = r.json()["results"]
        assert "Warning:" in res["message"] and "build_memory_cap_mb" in res["message"]
        assert res["build"]["maintenance_work_mem_mb"] == 64 and res["build"]["warning"]
        _wait(admin, name, lambda ix: ix["progress"] is not None)
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_progress_create_index "
                         "WHERE index_relid = %s::regclass", (name,))
        ix = _wait(admin, name, lambda ix: ix["status"] == "invalid" and ix["build"]["state"] == "failed")
        assert "cancel" in ix["build"]["error"] and ix["build"]["finished_at"]
    finally:
        builder.config = saved
        _drop(settings, name)
