"""Issue 10, finding 7: a password change ends every session of the user, at once.

Before, access tokens issued before a change kept working until they expired (60 minutes): a thief
holding one kept the account. Now every access and refresh token issued before the change is
refused on every replica, except (by default) the access token that made the change.
"""

from __future__ import annotations

import random
import uuid

import httpx

from tests.support import TestUser


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session(base_url: str, user: TestUser, password: str | None = None) -> dict[str, str]:
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": password or user.password})
    assert r.status_code == 200, r.text
    tokens = r.json()["results"]
    return {"access": tokens["access_token"]["token"], "refresh": tokens["refresh_token"]["token"]}


def me(base_url: str, access: str) -> int:
    return httpx.get(f"{base_url}/v3/users/me", headers=bearer(access)).status_code


def refresh(base_url: str, refresh_token: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v3/users/refresh-token", json=refresh_token)


def change_password(base_url: str, access: str, current: str, new: str, **extra: object) -> httpx.Response:
    body = {"current_password": current, "new_password": new, **extra}
    return httpx.post(f"{base_url}/v3/users/change-password", json=body, headers=bearer(access))


def test_password_change_ends_every_other_session(base_url: str, make_user) -> None:
    user = make_user("pwchange")
    mine, thief, other = session(base_url, user), session(base_url, user), session(base_url, user)
    assert me(base_url, thief["access"]) == 200

    new_password = f"new-{uuid.uuid4().hex}"
    r = change_password(base_url, mine["access"], user.password, new_password)
    assert r.status_code == 200 and r.json()["results"] == {"message": "Password changed successfully"}

    # Every other session ends at once: access and refresh tokens.
    r = httpx.get(f"{base_url}/v3/users/me", headers=bearer(thief["access"]))
    assert r.status_code == 401 and "password changed" in r.json()["detail"]["message"]
    assert me(base_url, other["access"]) == 401
    assert refresh(base_url, thief["refresh"]).status_code == 401
    r = httpx.post(f"{base_url}/v3/retrieval/search", headers=bearer(thief["access"]), json={"query": "x"})
    assert r.status_code == 401
    # The session that made the change goes on (as with R2R), but its refresh token ends too.
    assert me(base_url, mine["access"]) == 200
    assert refresh(base_url, mine["refresh"]).status_code == 401
    # The old password is gone; the new one gives a session that works and refreshes.
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": user.email, "password": user.password})
    assert r.status_code == 401
    fresh = session(base_url, user, new_password)
    assert me(base_url, fresh["access"]) == 200
    renewed = refresh(base_url, fresh["refresh"])
    assert renewed.status_code == 200
    assert me(base_url, renewed.json()["results"]["access_token"]["token"]) == 200
    # A second change keeps only its own caller: the session kept by the first one ends.
    third = f"third-{uuid.uuid4().hex}"
    assert change_password(base_url, fresh["access"], new_password, third).status_code == 200
    assert me(base_url, fresh["access"]) == 200
    assert me(base_url, mine["access"]) == 401


def test_password_change_can_end_the_current_session_too(base_url: str, make_user) -> None:
    user = make_user("pwchange")
    mine, other = session(base_url, user), session(base_url, user)
    new_password = f"new-{uuid.uuid4().hex}"
    r = change_password(base_url, mine["access"], user.password, new_password, keep_current_session=False)
    assert r.status_code == 200
    assert me(base_url, mine["access"]) == 401
    assert me(base_url, other["access"]) == 401
    assert me(base_url, session(base_url, user, new_password)["access"]) == 200


def test_wrong_current_passwords_end_nothing_and_are_throttled(base_url: str, make_user, settings) -> None:
    """A stolen access token must not become a way to guess the password: change-password counts
    a wrong ``current_password`` as a failed log-in (the session server's default limits)."""
    user = make_user("pwchange")
    mine, other = session(base_url, user), session(base_url, user)
    # From an address of its own (uvicorn trusts X-Forwarded-For from 127.0.0.1), so the test
    # uses up no other test's budget of failures.
    address = f"198.19.{random.randrange(256)}.{random.randrange(1, 255)}"
    mine_from = {**bearer(mine["access"]), "X-Forwarded-For": address}
    limit = settings.auth.login_failures_per_account_address
    body = {"current_password": "not-the-password", "new_password": f"new-{uuid.uuid4().hex}"}
    for _ in range(limit):
        r = httpx.post(f"{base_url}/v3/users/change-password", json=body, headers=mine_from)
        assert r.status_code == 400 and "current_password" in r.json()["detail"]["message"]
    r = httpx.post(
        f"{base_url}/v3/users/change-password", json={**body, "current_password": user.password}, headers=mine_from
    )
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # Nothing changed: the password and every session are as they were.
    assert me(base_url, mine["access"]) == 200 and me(base_url, other["access"]) == 200
    assert refresh(base_url, other["refresh"]).status_code == 200
    assert session(base_url, user)["access"]


def test_password_change_through_an_api_key_ends_every_session(base_url: str, make_user) -> None:
    user = make_user("pwchange")
    tokens = session(base_url, user)
    key = user.client.post(f"/v3/users/{user.id}/api-keys", json={"name": "ci"}).json()["results"]["api_key"]
    body = {"current_password": user.password, "new_password": f"new-{uuid.uuid4().hex}"}
    r = httpx.post(f"{base_url}/v3/users/change-password", json=body, headers={"X-API-Key": key})
    assert r.status_code == 200
    assert me(base_url, tokens["access"]) == 401
    assert user.client.get("/v3/users/me").status_code == 401
    # An API key is not a session: it is revoked on its own (DELETE .../api-keys/{id}).
    assert httpx.get(f"{base_url}/v3/users/me", headers={"X-API-Key": key}).status_code == 200
