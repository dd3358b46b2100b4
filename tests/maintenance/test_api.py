"""``/v3/system/maintenance``, ``/v3/system/maintenance/vacuum`` and ``/v3/system/status`` over HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx
import psycopg
import pytest

from ragkeep import __version__
from ragkeep.client import Client
from tests.maintenance.helpers import dead_tuples, delete_chunks, seed_chunks, wait_for_run
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, register


def start(admin: httpx.Client, body: dict | None = None) -> dict:
    resp = admin.post("/v3/system/maintenance/vacuum", json=body)
    assert resp.status_code == 202, resp.text
    run = resp.json()["results"]
    assert run["status"] in ("queued", "running", "succeeded") and run["trigger"] == "manual"
    return run


def test_manual_vacuum_records_dead_tuples_before_and_after(
    maint_admin: httpx.Client, maint_base_url: str, maint_url: str
) -> None:
    user = register(maint_base_url, "vac")
    seed_chunks(maint_url, user.id, 400)
    deleted = delete_chunks(maint_url, user.id, 2)
    assert deleted == 200
    before = dead_tuples(maint_url, "chunks")
    assert before >= deleted

    run = wait_for_run(maint_admin, start(maint_admin, {"tables": ["chunks", "documents"]})["id"])

    assert run["status"] == "succeeded", run
    assert run["task"] == "vacuum" and run["scheduled_for"] is None
    assert run["options"] == {"analyze": True, "full": False, "reindex": False}
    assert run["tables"] == ["chunks", "documents"]
    items = {i["table"]: i for i in run["items"]}
    assert set(items) == {"chunks", "documents"} and all(i["status"] == "done" for i in items.values())
    chunks = items["chunks"]
    assert chunks["dead_tuples_before"] >= deleted
    assert chunks["dead_tuples_after"] == 0
    assert chunks["live_tuples_after"] == 200
    assert chunks["bytes_before"] > 0 and chunks["bytes_after"] > 0
    assert chunks["bytes_reclaimed"] == chunks["bytes_before"] - chunks["bytes_after"]
    assert run["dead_tuples_before"] == sum(i["dead_tuples_before"] for i in items.values())
    assert run["dead_tuples_after"] == sum(i["dead_tuples_after"] for i in items.values())
    assert run["bytes_reclaimed"] == run["bytes_before"] - run["bytes_after"]
    started, finished = datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(run["finished_at"])
    assert started <= finished
    assert run["duration_seconds"] == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert dead_tuples(maint_url, "chunks") == 0
    assert run["error"] is None and ":" in run["replica"]


def test_full_vacuum_reclaims_space_and_only_when_asked(
    maint_admin: httpx.Client, maint_base_url: str, maint_url: str
) -> None:
    user = register(maint_base_url, "full")
    seed_chunks(maint_url, user.id, 1500)
    delete_chunks(maint_url, user.id, 1)  # every chunk of this user
    plain = wait_for_run(maint_admin, start(maint_admin, {"tables": ["chunks"]})["id"])
    assert plain["options"]["full"] is False
    seed_chunks(maint_url, user.id, 1500)
    delete_chunks(maint_url, user.id, 1)

    run = wait_for_run(maint_admin, start(maint_admin, {"tables": ["chunks"], "full": True})["id"])

    assert run["status"] == "succeeded" and run["options"]["full"] is True
    assert run["bytes_reclaimed"] > 1500 * 384 * 4 // 2, run  # most of the deleted vectors' pages are gone
    for value in ("true", 1, "yes"):
        resp = maint_admin.post("/v3/system/maintenance/vacuum", json={"full": value})
        assert resp.status_code == 422 and "full" in resp.json()["detail"]["message"], resp.text


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"tables": ["chunks", "no_such_table"]}, "tables", "no_such_table"),
        ({"tables": ["chunks; DROP TABLE users"]}, "tables", "not table names"),
        ({"tables": []}, "tables", "at least 1"),
        ({"full": True, "reindex": True}, "reindex", "FULL"),
        ({"tables": ["documents"], "reindex": True}, "reindex", "chunks"),
        ({"fulll": True}, "fulll", "Extra inputs"),
        ({"analyze": "maybe"}, "analyze", "boolean"),
    ],
)
def test_bad_vacuum_requests_are_422_naming_the_field(
    maint_admin: httpx.Client, maint_url: str, body: dict, field: str, words: str
) -> None:
    with psycopg.connect(maint_url) as conn:
        runs_before = conn.execute("SELECT count(*) FROM maintenance_runs").fetchone()
    resp = maint_admin.post("/v3/system/maintenance/vacuum", json=body)
    assert resp.status_code == 422, resp.text
    message = resp.json()["detail"]["message"]
    assert message.startswith(field) and words in message, message
    with psycopg.connect(maint_url) as conn:
        assert conn.execute("SELECT count(*) FROM maintenance_runs").fetchone() == runs_before
        assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone() == (True,)


def test_routes_are_for_superusers_only(maint_base_url: str) -> None:
    user = register(maint_base_url, "plain")
    for method, path in (
        ("GET", "/v3/system/maintenance"),
        ("GET", "/v3/system/maintenance/1"),
        ("POST", "/v3/system/maintenance/vacuum"),
        ("GET", "/v3/system/status"),
    ):
        assert user.client.request(method, path).status_code == 403, path
        assert httpx.request(method, maint_base_url + path).status_code == 401, path


def test_history_is_paginated_newest_first(maint_admin: httpx.Client) -> None:
    ids = [
        wait_for_run(maint_admin, start(maint_admin, {"tables": ["users"], "analyze": False})["id"])["id"]
        for _ in range(3)
    ]
    page = maint_admin.get("/v3/system/maintenance", params={"limit": 2, "task": "vacuum", "trigger": "manual"}).json()
    total = page["total_entries"]
    assert total >= 3 and [r["id"] for r in page["results"]] == sorted(ids, reverse=True)[:2]
    rest = maint_admin.get("/v3/system/maintenance", params={"offset": 2, "limit": 1000, "trigger": "manual"}).json()
    assert rest["total_entries"] == total and len(rest["results"]) == total - 2
    assert rest["results"][0]["id"] == min(ids) and rest["results"][0]["options"]["analyze"] is False
    past_the_end = maint_admin.get("/v3/system/maintenance", params={"offset": total}).json()
    assert past_the_end == {"results": [], "total_entries": total}
    scheduled = maint_admin.get("/v3/system/maintenance", params={"task": "reindex", "trigger": "schedule"}).json()
    assert scheduled["results"] == []
    resp = maint_admin.get("/v3/system/maintenance", params={"task": "analyse"})
    assert resp.status_code == 422 and "task" in resp.json()["detail"]["message"]
    resp = maint_admin.get("/v3/system/maintenance/999999")
    assert resp.status_code == 404 and "999999" in resp.json()["detail"]["message"]


def test_reindex_is_recommended_then_run_before_the_vacuum(
    maint_admin: httpx.Client, maint_base_url: str, maint_url: str
) -> None:
    user = register(maint_base_url, "reindex")
    with psycopg.connect(maint_url, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX maint_test_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 4, ef_construction = 8)"
        )
    try:
        seed_chunks(maint_url, user.id, 600)
        wait_for_run(maint_admin, start(maint_admin, {"tables": ["chunks"]})["id"])  # a clean start
        advice = maint_admin.get("/v3/system/status").json()["results"]["maintenance"]["reindex_advice"]
        assert advice["recommended"] is False and "below reindex_dead_share" in advice["reason"]

        delete_chunks(maint_url, user.id, 2)  # a large delete: half the chunks
        advice = maint_admin.get("/v3/system/status").json()["results"]["maintenance"]["reindex_advice"]
        assert advice["recommended"] is True, advice
        assert advice["indexes"] == ["maint_test_hnsw"] and advice["dead_tuples"] >= 300
        assert advice["statements"] == ['REINDEX INDEX CONCURRENTLY "maint_test_hnsw"']

        run = wait_for_run(maint_admin, start(maint_admin, {"tables": ["chunks"], "reindex": True})["id"])
        children = maint_admin.get("/v3/system/maintenance", params={"parent_id": run["id"]}).json()["results"]

        assert run["status"] == "succeeded" and run["reindex_advice"]["recommended"] is True
        assert len(children) == 1
        child = children[0]
        assert child["task"] == "reindex" and child["status"] == "succeeded" and child["trigger"] == "manual"
        assert [i["index"] for i in child["items"]] == ["maint_test_hnsw"]
        assert child["items"][0]["status"] == "done" and child["items"][0]["seconds"] >= 0
        assert child["duration_seconds"] is not None and child["bytes_after"] > 0
        # Both costs show, one after the other: the rebuild, then the VACUUM.
        assert datetime.fromisoformat(child["finished_at"]) <= datetime.fromisoformat(run["started_at"])
        with psycopg.connect(maint_url) as conn:
            valid = conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'maint_test_hnsw'"
            ).fetchall()
        assert valid == [(True,)]
        advice = maint_admin.get("/v3/system/status").json()["results"]["maintenance"]["reindex_advice"]
        assert advice["recommended"] is False and advice["dead_tuples"] == 0
    finally:
        with psycopg.connect(maint_url, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS maint_test_hnsw")


def test_status(maint_admin: httpx.Client) -> None:
    wait_for_run(maint_admin, start(maint_admin, {"tables": ["users"]})["id"])
    resp = maint_admin.get("/v3/system/status")
    assert resp.status_code == 200, resp.text
    s = resp.json()["results"]
    assert s["version"] == __version__ and s["uptime_seconds"] > 0
    assert s["database"]["kind"] == "external"  # a URL was configured (it happens to be the embedded server)
    assert s["database"]["server_version"].startswith("18")
    assert tuple(int(p) for p in s["database"]["pgvector_version"].split(".")[:2]) >= (0, 8)
    assert s["embedding"] == {"provider": "minilm", "model": "all-MiniLM-L6-v2", "dimension": 384}
    assert s["vector_indexes"]["total"] == s["vector_indexes"]["valid"] >= 0
    m = s["maintenance"]
    assert m["vacuum_schedule"] is None and m["next_run"] is None and m["scheduler_running"] is False
    assert m["last_run"]["tables"] == ["users"] and m["last_run"]["status"] == "succeeded"
    assert set(m["reindex_advice"]) >= {"recommended", "reason", "dead_share", "indexes"}


def test_client_system_namespace(maint_base_url: str) -> None:
    with Client(maint_base_url, email=ADMIN_EMAIL, password=ADMIN_PASSWORD) as client:
        run = client.system.vacuum(tables=["collections"], analyze=False)["results"]
        assert run["options"] == {"analyze": False, "full": False, "reindex": False}
        listed = client.system.maintenance_runs(limit=1, trigger="manual")
        assert listed["results"][0]["id"] == run["id"] and listed["total_entries"] >= 1
        assert client.system.maintenance_run(run["id"])["results"]["tables"] == ["collections"]
        assert client.system.status()["results"]["embedding"]["dimension"] == 384
