"""User administration: promotion, listing, updates, passwords, log-out, deletion and limits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from ragkeep.auth import users as users_sql
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.texts import paragraphs


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_pair(base_url: str, email: str, password: str) -> dict:
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def me(base_url: str, token: str) -> httpx.Response:
    return httpx.get(f"{base_url}/v3/users/me", headers=bearer(token))


# -- promotion ----------------------------------------------------------------------------------


def test_only_a_superuser_promotes(make_user, admin: httpx.Client) -> None:
    user, other = make_user(), make_user()
    r = user.client.post(f"/v3/users/{user.id}", json={"is_superuser": True})
    assert r.status_code == 403 and "is_superuser" in r.json()["detail"]["message"]
    assert user.client.post(f"/v3/users/{user.id}", json={"name": "x", "is_superuser": False}).status_code == 403
    assert user.client.post(f"/v3/users/{other.id}", json={"is_superuser": True}).status_code == 403
    r = user.client.post(f"/v3/users/{user.id}", json={"limits_overrides": {"max_documents": 10**9}})
    assert r.status_code == 403
    assert user.client.get("/v3/users/me").json()["results"]["is_superuser"] is False
    assert user.client.get("/v3/users").status_code == 403

    r = admin.post(f"/v3/users/{user.id}", json={"is_superuser": True})
    assert r.status_code == 200 and r.json()["results"]["is_superuser"] is True
    assert user.client.get("/v3/users", params={"ids": [str(other.id)]}).status_code == 200  # takes effect at once
    # The new superuser may demote themselves (another superuser remains).
    r = user.client.post(f"/v3/users/{user.id}", json={"is_superuser": False})
    assert r.status_code == 200 and r.json()["results"]["is_superuser"] is False
    assert user.client.get("/v3/users").status_code == 403


def test_the_last_superuser_is_neither_demoted_nor_deleted(settings, admin: httpx.Client) -> None:
    """Run on the real database inside a transaction that is rolled back: the session's own
    superuser must survive whatever else the test run does."""
    admin_id = uuid.UUID(admin.get("/v3/users/me").json()["results"]["id"])

    async def attempt() -> tuple[bool, bool]:
        async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
            await conn.execute("UPDATE users SET is_superuser = false WHERE is_superuser AND id <> %s", (admin_id,))
            refused = []
            for action in (
                users_sql.update_user(conn, admin_id, {"is_superuser": False}),
                users_sql.delete_user(conn, admin_id),
            ):
                try:
                    await action
                    refused.append(False)
                except users_sql.LastSuperuser:
                    refused.append(True)
            await conn.rollback()
            return refused[0], refused[1]

    assert asyncio.run(attempt()) == (True, True)
    assert admin.get("/v3/users/me").json()["results"]["is_superuser"] is True


# -- listing ------------------------------------------------------------------------------------


def test_users_list_for_superusers(make_user, admin: httpx.Client) -> None:
    a, b = make_user("list"), make_user("list")
    assert a.client.get("/v3/users").status_code == 403
    everyone = admin.get("/v3/users", params={"limit": 1000}).json()
    assert everyone["total_entries"] >= 3
    emails = [u["email"] for u in everyone["results"]]
    assert emails == sorted(emails, key=str.lower) and {a.email, b.email} <= set(emails)
    assert all("hashed_password" not in u for u in everyone["results"])

    by_id = admin.get("/v3/users", params={"ids": [str(a.id), str(b.id)]}).json()
    assert by_id["total_entries"] == 2 and {u["id"] for u in by_id["results"]} == {str(a.id), str(b.id)}
    by_email = admin.get("/v3/users", params={"email": b.email.upper()}).json()
    assert [u["id"] for u in by_email["results"]] == [str(b.id)] and by_email["total_entries"] == 1
    assert by_email["results"][0]["num_files"] == 0 and by_email["results"][0]["total_size_in_bytes"] == 0
    page = admin.get("/v3/users", params={"ids": [str(a.id), str(b.id)], "limit": 1, "offset": 1}).json()
    assert len(page["results"]) == 1 and page["total_entries"] == 2
    past = admin.get("/v3/users", params={"ids": [str(a.id)], "offset": 5}).json()
    assert past == {"results": [], "total_entries": 1}
    r = admin.get("/v3/users", params={"ids": "not-a-uuid"})
    assert r.status_code == 422 and "ids" in r.json()["detail"]["message"]


# -- updates ------------------------------------------------------------------------------------


def test_update_profile_and_metadata(base_url: str, make_user, admin: httpx.Client) -> None:
    user, other = make_user(), make_user()
    r = user.client.post(
        f"/v3/users/{user.id}",
        json={"name": "Ada", "bio": "notes", "profile_picture": "https://example.test/a.png",
              "metadata": {"team": "search", "tier": "gold"}},
    )
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert (got["name"], got["bio"], got["profile_picture"]) == ("Ada", "notes", "https://example.test/a.png")
    assert got["metadata"] == {"team": "search", "tier": "gold"}
    # Stripe-style merge, as R2R: set one, remove one with "", others stay; {} clears.
    r = user.client.post(f"/v3/users/{user.id}", json={"metadata": {"tier": "", "region": "eu"}})
    assert r.json()["results"]["metadata"] == {"team": "search", "region": "eu"}
    assert r.json()["results"]["name"] == "Ada"  # fields not sent stay
    assert user.client.post(f"/v3/users/{user.id}", json={"metadata": {}}).json()["results"]["metadata"] == {}

    assert user.client.post(f"/v3/users/{other.id}", json={"name": "hijack"}).status_code == 403
    r = admin.post(f"/v3/users/{other.id}", json={"name": "set by admin"})
    assert r.json()["results"]["name"] == "set by admin"
    assert admin.post(f"/v3/users/{uuid.uuid4()}", json={"name": "x"}).status_code == 404

    for body, field in (
        ({"email": "not-an-email"}, "email"),
        ({"name": "x" * 300}, "name"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"limits_overrides": {"max_documents": -1}}, "limits_overrides"),
    ):
        r = (admin if "limits_overrides" in body else user.client).post(f"/v3/users/{user.id}", json=body)
        assert r.status_code == 422 and field in r.json()["detail"]["message"], (body, r.text)
    r = user.client.post(f"/v3/users/{user.id}", json={"email": other.email.upper()})
    assert r.status_code == 409 and "email" in r.json()["detail"]["message"]

    new_email = f"renamed-{uuid.uuid4().hex[:8]}@ragkeep.test"
    assert user.client.post(f"/v3/users/{user.id}", json={"email": new_email}).json()["results"]["email"] == new_email
    assert user.client.get("/v3/users/me").status_code == 200  # tokens name the id, not the email
    token_pair(base_url, new_email, user.password)
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": user.password})
    assert r.status_code == 401


# -- passwords and tokens -----------------------------------------------------------------------


def test_change_password(base_url: str, make_user) -> None:
    user = make_user()
    before = token_pair(base_url, user.email, user.password)
    r = user.client.post(
        "/v3/users/change-password", json={"current_password": "wrong-password", "new_password": "long-enough-2"}
    )
    assert r.status_code == 400 and "current_password" in r.json()["detail"]["message"]
    r = user.client.post("/v3/users/change-password", json={"current_password": user.password, "new_password": "short"})
    assert r.status_code == 422 and "new_password" in r.json()["detail"]["message"]

    new_password = f"new-{uuid.uuid4().hex}"
    r = user.client.post(
        "/v3/users/change-password", json={"current_password": user.password, "new_password": new_password}
    )
    assert r.status_code == 200 and r.json()["results"] == {"message": "Password changed successfully"}
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": user.password})
    assert r.status_code == 401
    after = token_pair(base_url, user.email, new_password)
    assert me(base_url, after["access_token"]["token"]).status_code == 200
    assert user.client.get("/v3/users/me").status_code == 200  # the session that changed it goes on
    assert me(base_url, before["access_token"]["token"]).status_code == 401  # every other one ends
    # A refresh token from before the change no longer gives new tokens; one from after does.
    r = httpx.post(f"{base_url}/v3/users/refresh-token", json=before["refresh_token"]["token"])
    assert r.status_code == 401 and "password" in r.json()["detail"]["message"]
    assert httpx.post(f"{base_url}/v3/users/refresh-token", json=after["refresh_token"]["token"]).status_code == 200


def test_logout_revokes_that_token_only(base_url: str, make_user, settings) -> None:
    user = make_user()
    first = token_pair(base_url, user.email, user.password)
    second = token_pair(base_url, user.email, user.password)
    access = first["access_token"]["token"]
    assert me(base_url, access).status_code == 200

    r = httpx.post(f"{base_url}/v3/users/logout", headers=bearer(access))
    assert r.status_code == 200 and r.json()["results"] == {"message": "Logged out successfully"}
    assert me(base_url, access).status_code == 401
    assert httpx.post(f"{base_url}/v3/users/logout", headers=bearer(access)).status_code == 401
    assert httpx.post(f"{base_url}/v3/retrieval/search", headers=bearer(access), json={"query": "x"}).status_code == 401
    assert me(base_url, second["access_token"]["token"]).status_code == 200
    assert user.client.get("/v3/users/me").status_code == 200

    # As in R2R, log-out leaves the refresh token working; each refresh token works once.
    r = httpx.post(f"{base_url}/v3/users/refresh-token", json=first["refresh_token"]["token"])
    assert r.status_code == 200
    assert me(base_url, r.json()["results"]["access_token"]["token"]).status_code == 200
    r = httpx.post(f"{base_url}/v3/users/refresh-token", json=first["refresh_token"]["token"])
    assert r.status_code == 401 and "already used" in r.json()["detail"]["message"]

    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute("SELECT expires_at FROM revoked_tokens WHERE user_id = %s", (user.id,)).fetchall()
    assert len(rows) == 2 and all(r[0] > datetime.now(UTC) for r in rows)


def test_logout_prunes_expired_revocations(base_url: str, make_user, settings) -> None:
    user = make_user()
    stale = f"stale-{uuid.uuid4().hex}"
    with psycopg.connect(settings.database.url) as conn:
        conn.execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (%s, %s, %s)",
            (stale, user.id, datetime.now(UTC) - timedelta(minutes=1)),
        )
    access = token_pair(base_url, user.email, user.password)["access_token"]["token"]
    assert httpx.post(f"{base_url}/v3/users/logout", headers=bearer(access)).status_code == 200
    with psycopg.connect(settings.database.url) as conn:
        assert conn.execute("SELECT count(*) FROM revoked_tokens WHERE jti = %s", (stale,)).fetchone()[0] == 0


def test_logout_with_an_api_key_is_refused(base_url: str, make_user) -> None:
    user = make_user()
    key = user.client.post(f"/v3/users/{user.id}/api-keys", json={}).json()["results"]["api_key"]
    r = httpx.post(f"{base_url}/v3/users/logout", headers={"X-API-Key": key})
    assert r.status_code == 400 and "api-keys" in r.json()["detail"]["message"]
    assert httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": key}).status_code == 200


# -- deletion -----------------------------------------------------------------------------------


def test_delete_own_account_with_everything_it_owns(base_url: str, make_user, settings, admin) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    r = alice.client.post("/v3/documents", data={"raw_text": paragraphs("with", 2)})
    doc = r.json()["results"]["document_id"]
    cid = alice.client.post("/v3/collections", json={"name": "doomed"}).json()["results"]["id"]
    assert alice.client.post(f"/v3/collections/{cid}/users/{bob.id}").status_code == 200
    r = bob.client.post("/v3/documents", data={"raw_text": paragraphs("async", 1)})
    bob_doc = r.json()["results"]["document_id"]
    # Only a superuser may put another owner's document in alice's collection.
    assert admin.post(f"/v3/collections/{cid}/documents/{bob_doc}").status_code == 200
    key = alice.client.post(f"/v3/users/{alice.id}/api-keys", json={}).json()["results"]["api_key"]

    assert bob.client.request("DELETE", f"/v3/users/{alice.id}", json={"password": alice.password}).status_code == 403
    r = alice.client.delete(f"/v3/users/{alice.id}")
    assert r.status_code == 422 and "password" in r.json()["detail"]["message"]
    r = alice.client.request("DELETE", f"/v3/users/{alice.id}", json={"password": "wrong-password"})
    assert r.status_code == 400 and "password" in r.json()["detail"]["message"]
    assert alice.client.get("/v3/users/me").status_code == 200

    r = alice.client.request("DELETE", f"/v3/users/{alice.id}", json={"password": alice.password})
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    assert alice.client.get("/v3/users/me").status_code == 401
    assert httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": key}).status_code == 401
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": alice.email, "password": alice.password})
    assert r.status_code == 401
    with psycopg.connect(settings.database.url) as conn:
        for table in ("documents", "chunks", "collections", "api_keys", "owner_stats"):
            column = "user_id" if table == "api_keys" else "owner_id"
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (alice.id,)).fetchone()[0]
            assert n == 0, table
        assert conn.execute("SELECT count(*) FROM chunks WHERE document_id = %s", (doc,)).fetchone()[0] == 0
        # Bob's document stays, out of the collection that is gone, in its chunks too.
        assert conn.execute("SELECT collection_ids FROM documents WHERE id = %s", (bob_doc,)).fetchone()[0] == []
        chunk_sets = conn.execute("SELECT collection_ids FROM chunks WHERE document_id = %s", (bob_doc,)).fetchall()
        assert chunk_sets and all(c[0] == [] for c in chunk_sets)
    assert bob.client.get(f"/v3/documents/{bob_doc}").status_code == 200
    assert cid not in bob.client.get("/v3/users/me").json()["results"]["collection_ids"]


def test_superuser_deletes_other_accounts_without_their_password(make_user, admin: httpx.Client) -> None:
    user = make_user()
    assert admin.delete(f"/v3/users/{user.id}").status_code == 200
    assert admin.get(f"/v3/users/{user.id}").status_code == 404
    assert admin.delete(f"/v3/users/{user.id}").status_code == 404
    assert user.client.get("/v3/users/me").status_code == 401


# -- limits -------------------------------------------------------------------------------------


def test_limits_shape_and_usage(make_user, admin: httpx.Client) -> None:
    user, other = make_user(), make_user()
    r = user.client.post("/v3/documents", data={"raw_text": paragraphs("with", 3)})
    chunks = user.client.get(f"/v3/documents/{r.json()['results']['document_id']}").json()["results"]["chunk_count"]
    user.client.post("/v3/collections", json={"name": "mine"})

    limits = user.client.get(f"/v3/users/{user.id}/limits").json()["results"]
    assert set(limits) == {"storage_limits", "system_defaults", "user_overrides", "effective_limits", "usage"}
    storage = limits["storage_limits"]
    assert set(storage) == {"chunks", "documents", "collections"}
    assert storage["documents"] == {"used": 1, "limit": 10_000, "remaining": 9_999}
    assert storage["chunks"]["used"] == chunks > 0
    assert storage["collections"]["used"] == 1
    # ragkeep's [limits] defaults (docs/limits.md), not R2R's 60/20/10,000
    assert limits["system_defaults"] == {"global_per_min": 6_000, "route_per_min": None, "monthly_limit": 100_000_000}
    assert limits["effective_limits"] == limits["system_defaults"] and limits["user_overrides"] == {}
    assert set(limits["usage"]) == {"global_per_min", "monthly_limit", "routes"}
    assert set(limits["usage"]["global_per_min"]) == {"used", "limit", "remaining"}

    r = admin.post(f"/v3/users/{user.id}", json={"limits_overrides": {"max_documents": 5, "global_per_min": 7}})
    assert r.status_code == 200
    limits = user.client.get(f"/v3/users/{user.id}/limits").json()["results"]
    assert limits["storage_limits"]["documents"] == {"used": 1, "limit": 5, "remaining": 4}
    assert limits["effective_limits"]["global_per_min"] == 7 and limits["system_defaults"]["global_per_min"] == 6_000
    assert limits["user_overrides"] == {"max_documents": 5, "global_per_min": 7}

    assert other.client.get(f"/v3/users/{user.id}/limits").status_code == 403
    assert admin.get(f"/v3/users/{user.id}/limits").status_code == 200
    assert admin.get(f"/v3/users/{uuid.uuid4()}/limits").status_code == 404


@pytest.mark.parametrize("path", ["/v3/users/logout", "/v3/users/change-password"])
def test_static_routes_are_not_taken_for_user_ids(base_url: str, path: str) -> None:
    r = httpx.post(base_url + path, json={})
    assert r.status_code == 401  # authentication, not "logout is not a UUID"


# -- R2R's own client ---------------------------------------------------------------------------


def test_r2r_client_manages_users(base_url: str, make_user) -> None:
    r2r = pytest.importorskip("r2r")
    user = make_user("r2r")
    client = r2r.R2RClient(base_url)
    client.users.login(user.email, user.password)
    updated = client.users.update(user.id, name="Grace", bio="compilers", metadata={"team": "core"}).results
    assert (updated.name, updated.bio, updated.metadata) == ("Grace", "compilers", {"team": "core"})
    limits = client.users.get_limits().results  # parsed by R2R's LimitsResponse
    assert limits.storage_limits.documents.used == 0 and limits.system_defaults.global_per_min == 6_000
    assert client.users.list_collections(user.id).total_entries == 0
    with pytest.raises(r2r.R2RException) as denied:
        client.users.list()
    assert denied.value.status_code == 403

    new_password = f"r2r-{uuid.uuid4().hex}"
    assert client.users.change_password(user.password, new_password).results.message == "Password changed successfully"
    with pytest.raises(r2r.R2RException) as stale:
        client.users.refresh_token()  # the client's refresh token was issued under the old password
    assert stale.value.status_code == 401
    client.users.login(user.email, new_password)
    client.users.refresh_token()
    token = client.access_token
    assert client.users.logout().results.message == "Logged out successfully"
    assert me(base_url, token).status_code == 401

    superuser = r2r.R2RClient(base_url)
    superuser.users.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    listed = superuser.users.list(ids=[str(user.id)])
    assert listed.total_entries == 1 and listed.results[0].email == user.email and listed.results[0].num_files == 0
    client.users.login(user.email, new_password)
    assert client.users.delete(user.id, new_password).results.success is True
    assert superuser.users.list(ids=[str(user.id)]).total_entries == 0
