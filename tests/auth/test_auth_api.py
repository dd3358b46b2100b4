"""Authentication: every route but /v3/health needs credentials; wrong ones are 401, not 500."""

import httpx
import pytest

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD

PROTECTED = [
    ("GET", "/v3/users/me"),
    ("GET", "/v3/documents"),
    ("POST", "/v3/retrieval/search"),
    ("GET", "/v3/documents/00000000-0000-0000-0000-000000000000"),
]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_routes_need_credentials(base_url: str, method: str, path: str) -> None:
    r = httpx.request(method, base_url + path, json={"query": "x"})
    assert r.status_code == 401
    assert "authentication required" in r.json()["detail"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},  # alg=none
        {"X-API-Key": "rk_00000000000000000000000000000000.secret"},
        {"X-API-Key": "garbage"},
        {"X-API-Key": "rk_zz.zz"},
    ],
)
def test_bad_credentials_are_401(base_url: str, headers: dict) -> None:
    r = httpx.get(f"{base_url}/v3/users/me", headers=headers)
    assert r.status_code == 401, r.text


def test_login_wrong_password_and_unknown_user(base_url: str, make_user) -> None:
    user = make_user()
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": "wrong-password"})
    assert r.status_code == 401
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": "nobody@x.test", "password": "whatever1"})
    assert r.status_code == 401
    assert r.json()["detail"]["message"] == "incorrect email or password"


def test_register_login_me_refresh(base_url: str, make_user) -> None:
    user = make_user()
    me = user.client.get("/v3/users/me").json()["results"]
    assert me["email"] == user.email and me["is_superuser"] is False
    assert "hashed_password" not in me
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": user.password})
    tokens = r.json()["results"]
    assert tokens["access_token"]["token_type"] == "access"
    refreshed = httpx.post(f"{base_url}/v3/users/refresh-token", json=tokens["refresh_token"]["token"])
    assert refreshed.status_code == 200
    new_access = refreshed.json()["results"]["access_token"]["token"]
    assert httpx.get(f"{base_url}/v3/users/me", headers={"Authorization": f"Bearer {new_access}"}).status_code == 200
    # An access token is not a refresh token, and vice versa.
    assert httpx.post(f"{base_url}/v3/users/refresh-token", json=tokens["access_token"]["token"]).status_code == 401
    r = httpx.get(f"{base_url}/v3/users/me", headers={"Authorization": f"Bearer {tokens['refresh_token']['token']}"})
    assert r.status_code == 401


def test_expired_token_is_401(server, make_user) -> None:
    from ragkeep.auth.tokens import TokenIssuer

    user = make_user()
    secret = server.services.tokens._secret
    expired = TokenIssuer(secret, access_minutes=-1, refresh_days=1).issue(user.id, "access")
    r = httpx.get(f"{server.base_url}/v3/users/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]["message"]


def test_forged_token_with_other_secret_is_401(base_url: str, make_user) -> None:
    from ragkeep.auth.tokens import TokenIssuer

    user = make_user()
    forged = TokenIssuer("not-the-server-secret", 60, 1).issue(user.id, "access")
    assert httpx.get(f"{base_url}/v3/users/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_api_keys(base_url: str, make_user) -> None:
    user = make_user()
    created = user.client.post(f"/v3/users/{user.id}/api-keys", json={"name": "ci"}).json()["results"]
    key = created["api_key"]
    r = httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["results"]["id"] == str(user.id)
    # A key with the right id but a wrong secret is refused.
    wrong = key.split(".")[0] + ".not-the-secret"
    assert httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": wrong}).status_code == 401
    listed = user.client.get(f"/v3/users/{user.id}/api-keys").json()["results"]
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert all("api_key" not in k for k in listed)
    assert user.client.delete(f"/v3/users/{user.id}/api-keys/{created['key_id']}").status_code == 200
    assert httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": key}).status_code == 401


def test_users_cannot_act_on_other_accounts(make_user) -> None:
    a, b = make_user(), make_user()
    assert b.client.get(f"/v3/users/{a.id}").status_code == 403
    assert b.client.post(f"/v3/users/{a.id}/api-keys", json={}).status_code == 403
    assert b.client.get(f"/v3/users/{a.id}/api-keys").status_code == 403


def test_superuser_created_from_config(base_url: str, admin: httpx.Client) -> None:
    me = admin.get("/v3/users/me").json()["results"]
    assert me["email"] == ADMIN_EMAIL and me["is_superuser"] is True
    assert ADMIN_PASSWORD  # the fixture logged in with it


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-email", "password": "long-enough-1"}, "email"),
        ({"email": "a@b.test", "password": "short"}, "password"),
        ({"password": "long-enough-1"}, "email"),
    ],
)
def test_register_bad_input_names_the_field(base_url: str, body: dict, field: str) -> None:
    r = httpx.post(f"{base_url}/v3/users", json=body)
    assert r.status_code == 422
    assert field in r.json()["detail"]["message"]


def test_register_duplicate_email_is_409(base_url: str, make_user) -> None:
    user = make_user()
    r = httpx.post(f"{base_url}/v3/users", json={"email": user.email.upper(), "password": "another-password"})
    assert r.status_code == 409 and user.email.upper() in r.json()["detail"]["message"]
