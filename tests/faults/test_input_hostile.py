"""Issue 10, findings 2 and 3: malformed input is a 4xx that says what was wrong, never a 500.

On a7b43bf each of these was a 500: NUL in a log-in username or registration email (the database
driver refuses NUL), ``offset`` >= 2^63 (bigint out of range), NaN/Infinity metadata (jsonb refuses
them), metadata nested 50,000 deep (``RecursionError``), hybrid weights both 0 (division by zero)
and runs of dashes in full-text queries ("tsquery stack too small").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.support import ServerThread, TestUser
from tests.support.hostile import (
    DASHES,
    FULL_TEXT,
    HUGE_OFFSET,
    HYBRID,
    Hostile,
    hostile_requests,
    upload_ready,
)


@pytest.fixture(scope="module")
def owner(base_url: str) -> Iterator[tuple[TestUser, str, str]]:
    """A user with one searchable document and one collection."""
    from tests.support import register

    user = register(base_url, "hostile")
    doc_id = upload_ready(user.client, "Hostile input must be refused with a clear message, never a 500.")
    r = user.client.post("/v3/collections", json={"name": f"hostile-{uuid.uuid4().hex[:6]}"})
    assert r.status_code in (200, 201), r.text
    yield user, doc_id, r.json()["results"]["id"]
    user.client.close()


def _client(base_url: str, user: TestUser, h: Hostile) -> httpx.Client:
    return user.client if h.auth else httpx.Client(base_url=base_url, timeout=60)


@pytest.mark.parametrize("index", range(len(hostile_requests(str(uuid.uuid4())))))
def test_hostile_input_is_a_4xx(base_url: str, owner, index: int) -> None:
    user, doc_id, _ = owner
    h = hostile_requests(doc_id)[index]
    r = h.send(_client(base_url, user, h))
    if h.name.startswith("dash run"):  # a valid query: answered, the dashes read as negations
        assert r.status_code == 200, (h.name, r.status_code, r.text[:300])
    else:
        assert 400 <= r.status_code < 500, (h.name, r.status_code, r.text[:300])
        message = r.json()["detail"]
        assert message, h.name


@pytest.mark.parametrize(
    "query",
    [DASHES, f"a {DASHES} b", "- " * 60 + "x", "-(" * 60 + "x", f'"{DASHES}"', "x" + "-" * 5000, "--" * 5000],
)
@pytest.mark.parametrize("kind", ["full-text", "hybrid"])
def test_dash_runs_are_answered(owner, query: str, kind: str) -> None:
    user, _, _ = owner
    settings = FULL_TEXT if kind == "full-text" else HYBRID
    r = user.client.post("/v3/retrieval/search", json={"query": query, "search_settings": settings})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_negations_keep_their_meaning(owner) -> None:
    """A collapsed run is still a negation: ``---refused`` excludes the document, ``--refused`` finds it."""
    user, doc_id, _ = owner

    def found(query: str) -> bool:
        r = user.client.post("/v3/retrieval/search", json={"query": query, "search_settings": FULL_TEXT})
        assert r.status_code == 200, r.text
        return any(c["document_id"] == doc_id for c in r.json()["results"]["chunk_search_results"])

    assert found("hostile " + "-" * 40 + "refused")
    assert not found("hostile " + "-" * 41 + "refused")


def test_huge_offset_on_every_list_route(server: ServerThread, admin: httpx.Client, owner) -> None:
    """Every GET route with an ``offset`` (read from the app's OpenAPI) refuses 2^63 with a 422,
    and takes bigint's maximum."""
    user, doc_id, coll_id = owner
    ids = {"document_id": doc_id, "id": coll_id}
    routes = []
    for path, ops in server.app.openapi()["paths"].items():
        op = ops.get("get")
        if op and any(p["name"] == "offset" for p in op.get("parameters", [])):
            routes.append(path)
    assert len(routes) >= 10, routes
    for path in routes:
        url = path.format(**ids)
        if path == "/v3/users/{id}/collections":
            url = path.format(id=user.id)
        client = admin if path in ("/v3/users", "/v3/indices", "/v3/system/maintenance") else user.client
        r = client.get(url, params={"offset": HUGE_OFFSET})
        assert r.status_code == 422 and "offset" in r.text, (path, r.status_code, r.text[:300])
        r = client.get(url, params={"offset": HUGE_OFFSET - 1})
        assert r.status_code == 200, (path, r.status_code, r.text[:300])


def test_huge_ids_and_limits(admin: httpx.Client, owner) -> None:
    user, _, _ = owner
    assert admin.get(f"/v3/system/maintenance/{HUGE_OFFSET}").status_code == 422
    assert admin.get("/v3/system/maintenance", params={"parent_id": HUGE_OFFSET}).status_code == 422
    r = admin.post(f"/v3/users/{user.id}", json={"limits_overrides": {"max_documents": 10**30}})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "metadata",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": [1, -Infinity]}', '{"a": 1e999}', '{"a": ' + "1" * 5000 + "}"],
)
def test_non_finite_metadata(owner, metadata: str) -> None:
    user, doc_id, _ = owner
    r = user.client.post("/v3/documents", data={"raw_text": f"metadata {uuid.uuid4()}", "metadata": metadata})
    assert r.status_code == 422 and "metadata" in r.text, r.text
    for route in ("PATCH", "PUT"):
        r = user.client.request(route, f"/v3/documents/{doc_id}/metadata", content=f"[{metadata}]",
                                headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (route, r.status_code, r.text)


@pytest.mark.parametrize("levels", [65, 1_000, 50_000])
def test_deep_nesting(owner, levels: int) -> None:
    user, doc_id, _ = owner
    deep = '{"a":' * levels + "1" + "}" * levels
    r = user.client.post("/v3/documents", data={"raw_text": f"deep {uuid.uuid4()}", "metadata": deep})
    assert r.status_code == 422 and "nests deeper" in r.text, r.text
    r = user.client.patch(f"/v3/documents/{doc_id}/metadata", content=f"[{deep}]",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    r = user.client.post("/v3/retrieval/search", content='{"query": "x", "search_settings": {"filters": ' + deep + "}}",
                         headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


def test_hybrid_weights_both_zero(owner) -> None:
    user, _, _ = owner
    zero = {"full_text_weight": 0, "semantic_weight": 0}
    r = user.client.post("/v3/retrieval/search", json={
        "query": "hostile input", "search_settings": {**HYBRID, "hybrid_settings": zero}})
    assert r.status_code == 422 and "semantic_weight" in r.text, r.text
    r = user.client.post("/v3/retrieval/search", json={
        "query": "hostile input", "search_settings": {**HYBRID, "hybrid_settings": {**zero, "semantic_weight": 1}}})
    assert r.status_code == 200, r.text  # one weight is enough


# -- text: NUL, lone surrogates, invalid UTF-8 wherever text enters ------------------------------


def test_nul_in_login_and_registration(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": "a\x00b@ragkeep.test", "password": "x" * 12})
    assert r.status_code == 422 and "NUL" in r.text, r.text
    r = httpx.post(f"{base_url}/v3/users/login", data={"username": "a@ragkeep.test", "password": "x\x00" * 6})
    assert r.status_code == 422, r.text
    for email in ("a\x00b@ragkeep.test", "a\ud800b@ragkeep.test"):
        escaped = email.encode("ascii", "backslashreplace").decode().replace("\\x00", "\\u0000")
        body = f'{{"email": "{escaped}", "password": "long-enough-password"}}'
        r = httpx.post(f"{base_url}/v3/users", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (email, r.text)


@pytest.mark.parametrize(
    "raw",
    [
        "/v3/users?email=a%00b",  # NUL in a query parameter
        "/v3/users?email=a%FFb",  # invalid UTF-8 in a query parameter
        "/v3/users?email=%ED%A0%80",  # an encoded surrogate
        "/v3/documents?ids=%00",
        "/v3/collections/%00",  # NUL in a path
        "/v3/indices/vectors/%FF",
    ],
)
def test_bad_text_in_urls(admin: httpx.Client, raw: str) -> None:
    r = admin.get(httpx.URL(admin.base_url.join(raw)))
    assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)


def test_bad_text_in_json_bodies(owner) -> None:
    user, _, _ = owner
    for body in ('{"name": "a\\u0000b"}', '{"name": "a\\udc00b"}', b'{"name": "a\xffb"}'):
        r = user.client.post("/v3/collections", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (body, r.status_code, r.text)


def test_every_route_is_guarded(server: ServerThread) -> None:
    """The text check is the route class: a router built without it would skip it."""
    from ragkeep.api.guard import GuardedRoute

    def api_routes(routes: list) -> Iterator[APIRoute]:
        for r in routes:
            if isinstance(r, APIRoute):
                yield r
            elif (included := getattr(r, "original_router", None)) is not None:  # FastAPI >= 0.16x
                yield from api_routes(included.routes)

    api = list(api_routes(server.app.routes))
    assert len(api) > 50
    unguarded = [r.path for r in api if not isinstance(r, GuardedRoute)]
    assert not unguarded, unguarded
