"""One error vocabulary: every domain error has its status in one table, and every 401 says what to
send (``WWW-Authenticate: Bearer``), whichever path refused the credentials."""

import uuid

import httpx
import pytest

from ragkeep import errors
from ragkeep.api.errors import STATUS, ApiError, describe, domain_error_response
from ragkeep.auth.tokens import InvalidToken
from ragkeep.auth.users import EmailTaken, LastSuperuser
from ragkeep.ingest.store import DocumentBusy, DuplicateDocument
from ragkeep.search.filters import FilterError
from ragkeep.search.settings import InvalidSearch


@pytest.mark.parametrize(
    "exc, status, error_type",
    [
        (errors.NotFound("x"), 404, "NotFound"),
        (errors.Forbidden("x"), 403, "Forbidden"),
        (errors.Conflict("x"), 409, "Conflict"),
        (errors.Unauthorized("x"), 401, "Unauthorized"),
        (errors.InvalidInput("x"), 422, "InvalidInput"),
        (errors.QuotaExceeded("max_documents", 1, 1, "x"), 403, "LimitExceeded"),
        (errors.UploadTooLarge("max_upload_size", 1, 2, "x"), 413, "LimitExceeded"),
        (errors.RateLimited("global_per_min", 1, 1, "x", retry_after=3), 429, "LimitExceeded"),
        (ApiError(418, "x"), 418, "ApiError"),
        (InvalidToken("x"), 401, "Unauthorized"),
        (EmailTaken("a@b.test"), 409, "Conflict"),
        (LastSuperuser(), 409, "Conflict"),
        (DuplicateDocument(uuid.uuid4(), "x"), 409, "Conflict"),
        (DocumentBusy("x"), 409, "Conflict"),
        (FilterError("filters.a.$x", "unknown operator"), 422, "ApiError"),
        (InvalidSearch("no kind of search is on"), 422, "ApiError"),
    ],
)
def test_the_table_gives_each_error_its_status(exc: errors.DomainError, status: int, error_type: str) -> None:
    assert describe(exc) == (status, error_type)


def test_every_domain_error_class_is_in_the_table_or_under_one() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    for cls in subclasses(errors.DomainError):
        assert any(c in STATUS for c in cls.__mro__), cls


def test_limit_body_and_headers() -> None:
    resp = domain_error_response(errors.RateLimited("global_per_min", 60, 60, "too many", retry_after=17))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "17"
    assert resp.body == (
        b'{"detail":{"message":"too many","error_type":"LimitExceeded",'
        b'"limit_name":"global_per_min","limit":60,"used":60}}'
    )


def test_a_filter_error_names_its_path_in_the_body() -> None:
    resp = domain_error_response(FilterError("filters.$and[1].kind.$nope", "unknown operator"))
    assert resp.status_code == 422
    assert resp.body == (
        b'{"detail":{"message":"filters.$and[1].kind.$nope: unknown operator","error_type":"ApiError",'
        b'"path":"filters.$and[1].kind.$nope"}}'
    )


def test_a_401_from_the_table_carries_www_authenticate() -> None:
    assert domain_error_response(errors.Unauthorized("no")).headers["WWW-Authenticate"] == "Bearer"
    assert domain_error_response(ApiError(401, "no")).headers["WWW-Authenticate"] == "Bearer"
    assert "WWW-Authenticate" not in domain_error_response(ApiError(403, "no")).headers


def _assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers.get("WWW-Authenticate") == "Bearer"


def test_every_401_path_carries_www_authenticate(server, make_user) -> None:
    from ragkeep.auth.tokens import TokenIssuer

    base = server.base_url
    user = make_user()
    me = f"{base}/v3/users/me"
    _assert_401(httpx.get(me))  # no credentials
    _assert_401(httpx.get(me, headers={"Authorization": "Bearer not-a-jwt"}))  # bad token
    _assert_401(httpx.get(me, headers={"X-API-Key": "rk_00000000000000000000000000000000.secret"}))  # wrong key
    expired = TokenIssuer(server.services.tokens._secret, access_minutes=-1, refresh_days=1).issue(user.id, "access")
    _assert_401(httpx.get(me, headers={"Authorization": f"Bearer {expired}"}))  # expired
    _assert_401(httpx.post(f"{base}/v3/users/login", data={"username": user.email, "password": "wrong-pass"}))
    _assert_401(httpx.post(f"{base}/v3/users/refresh-token", json="not-a-jwt"))
    tokens = httpx.post(
        f"{base}/v3/users/login", data={"username": user.email, "password": user.password}
    ).json()["results"]
    access = {"Authorization": f"Bearer {tokens['access_token']['token']}"}
    assert httpx.post(f"{base}/v3/users/logout", headers=access).status_code == 200
    _assert_401(httpx.get(me, headers=access))  # revoked
