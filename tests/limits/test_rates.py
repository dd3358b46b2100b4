"""Request rate limits: per user, per minute (all routes and per route), per month; shared by
replicas through PostgreSQL; a refused request is a 429 with Retry-After and is not counted.

Each test waits, if need be, for a minute with enough time left (``fresh_minute``), so that the
window does not change while it counts.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import psycopg

from ragkeep.limits import rates as ratelimit
from tests.limits.conftest import ROUTE_LIMIT, ROUTE_LIMITED, fresh_minute, set_limits
from tests.support import login


def detail(r: httpx.Response) -> dict:
    return r.json()["detail"]


def usage(admin: httpx.Client, user_id: uuid.UUID) -> dict:
    """The user's limits report, read by a superuser (exempt: reading does not count)."""
    r = admin.get(f"/v3/users/{user_id}/limits")
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_global_per_min_refuses_with_retry_after_and_does_not_count_refusals(
    make_user, admin: httpx.Client, db: psycopg.Connection
) -> None:
    user = make_user("rate")
    set_limits(admin, user, {"global_per_min": 5})
    fresh_minute(db)
    codes = [user.client.get("/v3/users/me").status_code for _ in range(5)]
    assert codes == [200] * 5
    r = user.client.get("/v3/documents")
    assert r.status_code == 429, r.text
    d = detail(r)
    assert (d["limit_name"], d["limit"], d["used"]) == ("global_per_min", 5, 5)
    assert "global_per_min" in d["message"]
    assert "5 requests this minute" in d["message"] and "limit is 5" in d["message"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 60 and f"retry in {retry} s" in d["message"]

    for _ in range(3):  # refusals are not counted
        assert user.client.get("/v3/users/me").status_code == 429
    report = usage(admin, user.id)["usage"]
    assert report["global_per_min"] == {"used": 5, "limit": 5, "remaining": 0}
    assert report["monthly_limit"]["used"] == 5

    set_limits(admin, user, {"global_per_min": 7})  # the new limit applies to the next request
    assert user.client.get("/v3/users/me").status_code == 200


def test_route_override_limits_one_route_template_only(make_user, admin: httpx.Client, db: psycopg.Connection) -> None:
    """A route is its template (/v3/documents/{document_id}): two documents are one route."""
    user = make_user("route")
    ids = [
        user.client.post(
            "/v3/documents", data={"raw_text": f"note {i} {uuid.uuid4().hex}"}
        ).json()["results"]["document_id"]
        for i in range(3)
    ]
    set_limits(admin, user, {"route_overrides": {"/v3/documents/{document_id}": {"route_per_min": 2}}})
    fresh_minute(db)
    assert user.client.get(f"/v3/documents/{ids[0]}").status_code == 200
    assert user.client.get(f"/v3/documents/{ids[1]}").status_code == 200
    r = user.client.get(f"/v3/documents/{ids[2]}")
    assert r.status_code == 429
    d = detail(r)
    assert d["limit_name"] == "route_per_min" and d["limit"] == 2 and "/v3/documents/{document_id}" in d["message"]
    assert user.client.get("/v3/documents").status_code == 200, "other routes are not limited by it"

    routes = usage(admin, user.id)["usage"]["routes"]
    assert routes["/v3/documents/{document_id}"]["route_per_min"] == {"used": 2, "limit": 2, "remaining": 0}


def test_monthly_limit(make_user, admin: httpx.Client, db: psycopg.Connection) -> None:
    user = make_user("month")
    set_limits(admin, user, {"monthly_limit": 3})
    fresh_minute(db)
    for _ in range(3):
        assert user.client.get("/v3/users/me").status_code == 200
    r = user.client.get("/v3/users/me")
    assert r.status_code == 429 and detail(r)["limit_name"] == "monthly_limit"
    assert "this month" in detail(r)["message"]
    left = db.execute(
        "SELECT extract(epoch FROM date_trunc('month', now(), 'UTC') + interval '1 month' - now())"
    ).fetchone()[0]
    assert abs(int(r.headers["Retry-After"]) - float(left)) < 10


def test_limits_hold_across_replicas(make_user, admin: httpx.Client, on_replica, db: psycopg.Connection) -> None:
    """Two servers on one database count one user's requests together."""
    user = make_user("replicas")
    set_limits(admin, user, {"global_per_min": 6})
    other = on_replica(user)
    fresh_minute(db)
    for i in range(6):
        assert (user.client if i % 2 else other).get("/v3/users/me").status_code == 200
    assert user.client.get("/v3/users/me").status_code == 429
    assert other.get("/v3/users/me").status_code == 429


def test_concurrent_requests_at_the_limit(make_user, admin: httpx.Client, on_replica, db: psycopg.Connection) -> None:
    """40 requests at once over two replicas with a limit of 10: exactly 10 pass."""
    user = make_user("burst")
    set_limits(admin, user, {"global_per_min": 10})
    clients = [user.client, on_replica(user)]
    fresh_minute(db, need_seconds=30)

    def get(i: int) -> int:
        c = clients[i % 2]
        with httpx.Client(base_url=str(c.base_url), headers=dict(c.headers), timeout=60) as fresh:
            return fresh.get("/v3/users/me").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(get, range(40)))
    assert codes.count(200) == 10 and codes.count(429) == 30, codes
    assert usage(admin, user.id)["usage"]["global_per_min"]["used"] == 10


def test_route_limit_from_configuration(make_user, on_replica, db: psycopg.Connection) -> None:
    """The replica's TOML limits ROUTE_LIMITED; the user's report on it lists the route."""
    user = make_user("toml")
    client = on_replica(user)
    fresh_minute(db)
    path = ROUTE_LIMITED.replace("{user_id}", str(user.id))
    for _ in range(ROUTE_LIMIT):
        assert client.get(path).status_code == 200
    r = client.get(path)
    assert r.status_code == 429 and detail(r)["limit_name"] == "route_per_min"
    assert client.get("/v3/users/me").status_code == 200

    report = client.get(f"/v3/users/{user.id}/limits").json()["results"]
    assert report["usage"]["routes"][ROUTE_LIMITED]["route_per_min"] == {
        "used": ROUTE_LIMIT, "limit": ROUTE_LIMIT, "remaining": 0,
    }
    # The session server has no such route limit.
    assert user.client.get(path).status_code == 200


def test_superusers_are_not_counted(admin: httpx.Client, db: psycopg.Connection) -> None:
    me = admin.get("/v3/users/me").json()["results"]
    try:
        assert admin.post(f"/v3/users/{me['id']}", json={"limits_overrides": {"global_per_min": 1}}).status_code == 200
        for _ in range(4):
            assert admin.get("/v3/users/me").status_code == 200
        count = db.execute("SELECT count(*) FROM rate_counters WHERE user_id = %s", (me["id"],)).fetchone()[0]
        assert count == 0
    finally:
        admin.post(f"/v3/users/{me['id']}", json={"limits_overrides": me["limits_overrides"] or {}})


def test_routes_without_a_caller_are_not_limited(base_url: str, make_user, admin: httpx.Client) -> None:
    """Log-in and token refresh work even for a user at their limit, and even when a stale or
    foreign token is still sent along (clients keep their Authorization header)."""
    user = make_user("anon")
    set_limits(admin, user, {"global_per_min": 1})
    assert user.client.get("/v3/users/me").status_code == 200
    assert user.client.get("/v3/users/me").status_code == 429
    stale = {"Authorization": "Bearer not-a-token"}
    r = httpx.post(
        f"{base_url}/v3/users/login", data={"username": user.email, "password": user.password}, headers=stale
    )
    assert r.status_code == 200, r.text
    refresh = r.json()["results"]["refresh_token"]["token"]
    r = httpx.post(f"{base_url}/v3/users/refresh-token", json=refresh, headers=stale)
    assert r.status_code == 200, r.text
    assert httpx.get(f"{base_url}/v3/health").status_code == 200


def test_limits_report_parses_as_r2r_limits_response(make_user, admin: httpx.Client, replica) -> None:
    """R2R's client validates the report with its own model (every limit an integer)."""
    from shared.api.models.management.responses import LimitsResponse

    user = make_user("r2r")
    set_limits(admin, user, {"route_overrides": {"/v3/retrieval/search": {"route_per_min": 9}}, "max_chunks": 50})
    report = user.client.get(f"/v3/users/{user.id}/limits").json()["results"]
    parsed = LimitsResponse.model_validate(report)
    assert parsed.usage.routes["/v3/retrieval/search"].route_per_min.limit == 9
    assert parsed.storage_limits.chunks.limit == 50
    assert parsed.effective_limits.global_per_min == parsed.system_defaults.global_per_min == 6_000
    client = login(replica.base_url, user.email, user.password)
    try:
        LimitsResponse.model_validate(client.get(f"/v3/users/{user.id}/limits").json()["results"])
    finally:
        client.close()


def test_other_users_cannot_read_limits(make_user) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    assert bob.client.get(f"/v3/users/{alice.id}/limits").status_code == 403
    assert alice.client.get(f"/v3/users/{alice.id}/limits").status_code == 200


def test_a_user_cannot_reset_their_own_counters(make_user, admin: httpx.Client, db: psycopg.Connection) -> None:
    """Hostile attempts: changing one's own overrides, or a route that does not exist, do not
    lift a limit; an unknown path still counts against the global limit."""
    user = make_user("hostile")
    set_limits(admin, user, {"global_per_min": 3})
    fresh_minute(db)
    assert user.client.get("/v3/users/me").status_code == 200
    r = user.client.post(f"/v3/users/{user.id}", json={"limits_overrides": {"global_per_min": 10**9}})
    assert r.status_code == 403  # counted: 2
    assert user.client.get("/v3/users/me").status_code == 200  # 3
    assert user.client.get("/v3/users/me").status_code == 429
    assert user.client.get(f"/v3/documents/{uuid.uuid4()}").status_code == 429


def test_old_windows_are_deleted(make_user, db: psycopg.Connection, settings) -> None:
    """The counters stay bounded: minutes before the last and months before the previous go."""
    import asyncio

    user = make_user("old")
    rows = {
        ("minute", "", timedelta(minutes=5)): True,
        ("minute", "/v3/x", timedelta(minutes=2)): True,
        ("minute", "", timedelta(0)): False,
        ("month", "", timedelta(days=70)): True,
        ("month", "", timedelta(0)): False,
    }
    for period, route, age in rows:
        trunc = "minute" if period == "minute" else "month"
        db.execute(
            f"""INSERT INTO rate_counters (user_id, period, route, window_start, count)
                VALUES (%s, %s, %s, date_trunc('{trunc}', now() - %s{", 'UTC'" if trunc == "month" else ""}), 1)
                ON CONFLICT DO NOTHING""",
            (user.id, period, route, age),
        )

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(settings.database.url, autocommit=True) as conn:
            return await ratelimit.delete_old_windows(conn)

    assert asyncio.run(run()) >= 3
    left = db.execute(
        "SELECT period, route FROM rate_counters WHERE user_id = %s ORDER BY period", (user.id,)
    ).fetchall()
    assert left == [("minute", ""), ("month", "")]
