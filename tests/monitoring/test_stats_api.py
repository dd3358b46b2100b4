"""The operator's metrics through the API: /metrics, GET /v3/system/stats, per-user stats.

A server of its own on a database of its own (conftest), flushing every 0.2 s; the tests poll
until the flushed figures show what they did, and assert exact counts where the database holds
nobody else's traffic.
"""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import PROM_TOKEN, query
from tests.support import TestUser, register, wait_for

TEXT = "Rivers carry water to the sea. Mountains hold snow through the summer. " * 12


def _search(user: TestUser, n: int, query_text: str = "water") -> None:
    for _ in range(n):
        r = user.client.post("/v3/retrieval/search", json={"query": query_text})
        assert r.status_code == 200, r.text


def _ingest(user: TestUser, text: str = TEXT) -> uuid.UUID:
    r = user.client.post("/v3/documents", data={"raw_text": text})
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["results"]["document_id"])


def _stats(client: httpx.Client, **params: object) -> dict:
    r = client.get("/v3/system/stats", params=params)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append(s)
    return found


def test_prometheus_endpoint(metrics_base_url: str, metrics_url: str) -> None:
    user = register(metrics_base_url, "prom")
    doc = _ingest(user)
    _search(user, 2)
    assert user.client.get(f"/v3/documents/{doc}").status_code == 200
    assert user.client.get(f"/no/such/path/{uuid.uuid4()}").status_code == 404

    assert httpx.get(f"{metrics_base_url}/metrics").status_code == 401
    assert httpx.get(f"{metrics_base_url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(f"{metrics_base_url}/metrics", headers={"Authorization": f"Bearer {PROM_TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    # Low cardinality: templates, not paths; no user or document id anywhere.
    assert str(user.id) not in text and str(doc) not in text
    samples = _samples(text)
    routes = {
        (s.labels["method"], s.labels["route"], s.labels["status"]) for s in samples["ragkeep_http_requests_total"]
    }
    assert ("GET", "/v3/documents/{document_id}", "2xx") in routes
    assert ("GET", "(unmatched)", "4xx") in routes
    assert ("POST", "/v3/retrieval/search", "2xx") in routes
    searched = {
        (s.labels["kind"], s.labels["strategy"]): s.value for s in samples["ragkeep_search_duration_seconds_count"]
    }
    assert searched[("semantic", "exact")] >= 2
    vectors = {(s.labels["kind"], s.labels["strategy"]): s.value for s in samples["ragkeep_search_vectors_sum"]}
    (chunks,) = query(metrics_url, "SELECT chunk_count FROM owner_stats WHERE owner_id = %s", (user.id,))[0]
    assert vectors[("semantic", "exact")] >= 2 * chunks > 0

    def one(name: str, **labels: str) -> float:
        (value,) = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
        return value

    assert one("ragkeep_database_up") == 1
    total_chunks = query(metrics_url, "SELECT sum(chunk_count) FROM owner_stats")[0][0]
    assert one("ragkeep_chunks") == total_chunks
    assert one("ragkeep_users") == query(metrics_url, "SELECT count(*) FROM users")[0][0]
    assert one("ragkeep_process_resident_memory_bytes") > 10_000_000
    assert one("ragkeep_process_cpu_seconds_total") > 0
    assert one("ragkeep_table_size_bytes", table="chunks") > 0
    assert one("ragkeep_index_size_bytes", table="chunks", index="chunks_pkey") > 0
    hits = one("ragkeep_db_blocks_hit_total")
    ratio = one("ragkeep_db_cache_hit_ratio")
    assert hits > 0 and 0 < ratio <= 1
    parts = {s.labels["part"] for s in samples["ragkeep_chunks_blocks_hit_total"]}
    assert parts == {"heap", "indexes", "toast", "toast_indexes"}
    assert "chunks_pkey" in {s.labels["index"] for s in samples["ragkeep_chunks_index_scans_total"]}
    assert {s.labels["period"] for s in samples["ragkeep_active_users"]} == {"hour", "day"}


def test_system_stats(metrics_base_url: str, metrics_admin: httpx.Client, metrics_url: str) -> None:
    busy, quiet = register(metrics_base_url, "busy"), register(metrics_base_url, "quiet")
    _ingest(busy)
    _ingest(quiet, "A quiet document about owls and the night. " * 10)
    _search(busy, 3)
    _search(quiet, 1, "owls")

    def searched() -> dict | None:
        stats = _stats(metrics_admin, top=50)
        per_user = {u["user_id"]: u for u in stats["searches"]["top_users"]}
        ok = (
            per_user.get(str(busy.id), {}).get("searches") == 3
            and per_user.get(str(quiet.id), {}).get("searches") == 1
        )
        # Request activity is flushed by another task than search activity: wait for both.
        routes = {(x["method"], x["route"]): x["requests"] for x in stats["requests"]["routes"]}
        ok = ok and routes.get(("POST", "/v3/retrieval/search"), 0) >= 4
        return stats if ok else None

    stats = wait_for(searched)
    s = stats["searches"]
    top = {u["user_id"]: u for u in s["top_users"]}
    b = top[str(busy.id)]
    busy_chunks = query(metrics_url, "SELECT chunk_count FROM owner_stats WHERE owner_id = %s", (busy.id,))[0][0]
    assert b["email"] == busy.email and b["chunks"] == busy_chunks and b["documents"] == 1
    assert b["vectors_per_query"] == busy_chunks  # the planner's scope: all of the user's chunks
    assert b["p50_ms"] is not None and b["p50_ms"] <= b["p95_ms"] <= b["max_ms"]
    # The top list is ordered by searches, and every search lands in one hour of the day.
    counts = [u["searches"] for u in s["top_users"]]
    assert counts == sorted(counts, reverse=True)
    assert sum(s["by_hour_of_day"]) == s["searches"] >= 4
    assert any(p["kind"] == "semantic" and p["strategy"] == "exact" for p in s["by_plan"])

    routes = {(x["method"], x["route"]): x for x in stats["requests"]["routes"]}
    assert routes[("POST", "/v3/retrieval/search")]["requests"] >= 4
    assert routes[("POST", "/v3/documents")]["requests"] >= 2
    assert stats["requests"]["peak_hour"] is not None

    active = stats["active_users"]
    assert active["current_day"] >= 3 and active["window"] >= 3  # busy, quiet, the admin
    assert sum(d["users"] for d in active["per_day"][-1:]) >= 3
    per_user = {u["user_id"]: u for u in stats["content"]["per_user"]}
    assert per_user[str(quiet.id)]["documents"] == 1
    assert stats["content"]["chunks"] == query(metrics_url, "SELECT sum(chunk_count) FROM owner_stats")[0][0]

    cache = stats["cache"]
    assert cache["database"]["blks_hit"] > 0 and 0 < cache["database"]["hit_ratio"] <= 1
    assert "chunks_pkey" in {i["index"] for i in cache["chunk_indexes"]}
    (me,) = [i for i in stats["instances"] if i["this"]]
    assert me["rss_bytes"] > 10_000_000 and me["cpu_count"] >= 1 and me["memory_total_bytes"] > me["rss_bytes"]
    tables = {t["table"]: t for t in stats["storage"]["tables"]}
    assert tables["chunks"]["total_bytes"] == tables["chunks"]["table_bytes"] + tables["chunks"]["index_bytes"] > 0
    assert stats["storage"]["snapshots"], "the first slot's snapshot is taken at start"


def test_stats_need_a_superuser_and_valid_parameters(metrics_base_url: str, metrics_admin: httpx.Client) -> None:
    user = register(metrics_base_url, "nosu")
    r = user.client.get("/v3/system/stats")
    assert r.status_code == 403 and "superuser" in r.json()["detail"]["message"]
    for bad in ({"window_hours": 0}, {"window_hours": 10**6}, {"top": 0}, {"window_hours": "day"}):
        r = metrics_admin.get("/v3/system/stats", params=bad)
        assert r.status_code == 422, (bad, r.text)
        assert next(iter(bad)) in r.text


def test_user_stats_for_self_others_and_unknown(metrics_base_url: str, metrics_admin: httpx.Client) -> None:
    me, other = register(metrics_base_url, "self"), register(metrics_base_url, "other")
    _ingest(me)
    _search(me, 2)

    def mine() -> dict | None:
        r = me.client.get(f"/v3/system/users/{me.id}/stats", params={"window_hours": 2})
        assert r.status_code == 200, r.text
        body = r.json()["results"]
        return body if body["searches"]["searches"] == 2 and body["requests"]["requests"] >= 3 else None

    body = wait_for(mine)
    assert body["email"] == me.email and body["documents"] == 1 and body["chunks"] > 0
    assert body["searches"]["vectors_per_query"] == body["chunks"] and body["searches"]["top_users"] is None
    assert body["requests"]["active_hours"] >= 1 and body["per_day"][-1]["searches"] == 2

    # A superuser reads anyone's; the same figures.
    r = metrics_admin.get(f"/v3/system/users/{me.id}/stats", params={"window_hours": 2})
    assert r.status_code == 200 and r.json()["results"]["searches"]["searches"] == 2
    # Another user: 403, whether the id exists or not (no probing for accounts).
    for target in (me.id, uuid.uuid4()):
        r = other.client.get(f"/v3/system/users/{target}/stats")
        assert r.status_code == 403, r.text
    r = metrics_admin.get(f"/v3/system/users/{uuid.uuid4()}/stats")
    assert r.status_code == 404 and "no user" in r.json()["detail"]["message"]
    assert metrics_admin.get("/v3/system/users/not-a-uuid/stats").status_code == 422


def test_api_key_requests_count_for_their_user_and_wrong_keys_for_nobody(
    metrics_base_url: str, metrics_url: str
) -> None:
    user = register(metrics_base_url, "keyed")  # registering and logging in carry no credentials
    r = user.client.post(f"/v3/users/{user.id}/api-keys", json={"name": "metrics"})  # 1 by token
    assert r.status_code == 200, r.text
    key = r.json()["results"]["api_key"]
    wrong = key.rsplit(".", 1)[0] + ".not-the-secret"
    with httpx.Client(base_url=metrics_base_url, headers={"X-API-Key": wrong}) as bad:
        assert bad.get("/v3/users/me").status_code == 401
        assert bad.get("/v3/health").status_code == 200  # a route without auth: still nobody's
    with httpx.Client(base_url=metrics_base_url, headers={"X-API-Key": key}) as keyed:
        for _ in range(3):  # 3 by key
            assert keyed.get("/v3/users/me").status_code == 200

    def counted() -> int | None:
        total = query(metrics_url, "SELECT sum(requests) FROM user_activity WHERE user_id = %s", (user.id,))[0][0]
        return total if total and total >= 4 else None

    # The wrong key's requests were recorded first, so they were flushed by the time these are.
    assert wait_for(counted) == 4


def test_two_replicas_report_the_same(metrics_base_url: str, metrics_server, metrics_url: str,
                                      tmp_path_factory) -> None:
    """A second server process on the same database answers with the same per-user figures."""
    from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, login

    other = ServerThread(metrics_server.app.state.services.settings).start()
    try:
        user = register(metrics_base_url, "replicas")
        _ingest(user)
        _search(user, 2)  # on the first replica
        with login(other.base_url, user.email, user.password) as on_other:
            for _ in range(3):  # and on the second
                assert on_other.post("/v3/retrieval/search", json={"query": "snow"}).status_code == 200
        with login(other.base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as admin_b, \
                login(metrics_base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as admin_a:

            def both() -> tuple[dict, dict] | None:
                a, b = _stats(admin_a, top=100), _stats(admin_b, top=100)
                mine = [u for u in a["searches"]["top_users"] if u["user_id"] == str(user.id)]
                return (a, b) if mine and mine[0]["searches"] == 5 else None

            a, b = wait_for(both)
            assert a["searches"] == b["searches"]
            assert a["content"] == b["content"]
            assert a["active_users"]["per_day"] == b["active_users"]["per_day"]
    finally:
        other.stop()
