"""Storage quotas: documents, chunks, collections and upload sizes, through the API.

The concurrency tests fire many uploads at once, split over two servers on one database (two
replicas), at a user whose limit is nearly reached: exactly the allowed number may succeed.
"""

from __future__ import annotations

import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.limits.conftest import set_limits
from tests.support import TestUser, login
from tests.texts import paragraphs, topic

DIM = 384


def vector_chunks(n: int, seed: str) -> str:
    """``n`` ready-made chunks with embeddings: ingested without the model, so uploads are fast
    and many can be in flight at once."""
    rng = random.Random(seed)
    return json.dumps(
        [{"text": f"{seed} chunk {i}", "embedding": [rng.uniform(-1, 1) for _ in range(DIM)]} for i in range(n)]
    )


def upload_chunks(client: httpx.Client, n: int, seed: str | None = None) -> httpx.Response:
    return client.post("/v3/documents", data={"chunks": vector_chunks(n, seed or uuid.uuid4().hex)})


def stored(db: psycopg.Connection, user: TestUser) -> tuple[int, int, int, int]:
    """(documents, chunks) counted from the tables, and owner_stats' (documents, chunks)."""
    docs = db.execute("SELECT count(*) FROM documents WHERE owner_id = %s", (user.id,)).fetchone()[0]
    chunks = db.execute("SELECT count(*) FROM chunks WHERE owner_id = %s", (user.id,)).fetchone()[0]
    row = db.execute("SELECT document_count, chunk_count FROM owner_stats WHERE owner_id = %s", (user.id,)).fetchone()
    return docs, chunks, *(row or (0, 0))


def detail(r: httpx.Response) -> dict:
    return r.json()["detail"]


# -- documents ----------------------------------------------------------------------------------


def test_document_limit_is_a_403_naming_the_limit_and_usage(make_user, admin: httpx.Client) -> None:
    user = make_user("docs")
    set_limits(admin, user, {"max_documents": 2})
    assert upload_chunks(user.client, 1).status_code == 201
    second = upload_chunks(user.client, 1)
    assert second.status_code == 201

    r = upload_chunks(user.client, 1)
    assert r.status_code == 403, r.text
    d = detail(r)
    assert d["error_type"] == "LimitExceeded" and d["limit_name"] == "max_documents"
    assert (d["limit"], d["used"]) == (2, 2)
    assert "max_documents" in d["message"] and "2 documents" in d["message"] and "limit is 2" in d["message"]
    report = user.client.get(f"/v3/users/{user.id}/limits").json()["results"]["storage_limits"]["documents"]
    assert report == {"used": 2, "limit": 2, "remaining": 0}

    # Deleting makes room again; raising the limit does too.
    assert user.client.delete(f"/v3/documents/{second.json()['results']['document_id']}").status_code == 200
    assert upload_chunks(user.client, 1).status_code == 201
    set_limits(admin, user, {"max_documents": 3})
    assert upload_chunks(user.client, 1).status_code == 201
    assert upload_chunks(user.client, 1).status_code == 403


def test_a_null_override_means_the_default(make_user, admin: httpx.Client) -> None:
    user = make_user("nulls")
    set_limits(admin, user, {"max_documents": 0})
    assert upload_chunks(user.client, 1).status_code == 403
    set_limits(admin, user, {"max_documents": None})
    assert upload_chunks(user.client, 1).status_code == 201
    limits = user.client.get(f"/v3/users/{user.id}/limits").json()["results"]
    assert limits["storage_limits"]["documents"]["limit"] == 10_000


@pytest.mark.parametrize("room", [1, 4])
def test_concurrent_uploads_at_the_limit_never_end_over(
    room: int, make_user, admin: httpx.Client, on_replica, db: psycopg.Connection
) -> None:
    """24 uploads at once over two replicas, with room for ``room`` more: exactly ``room`` pass."""
    user = make_user("race")
    for _ in range(3):
        assert upload_chunks(user.client, 1).status_code == 201
    set_limits(admin, user, {"max_documents": 3 + room})
    clients = [user.client, on_replica(user)]
    bodies = [vector_chunks(1, f"race-{i}-{uuid.uuid4().hex}") for i in range(24)]

    def post(i: int) -> int:
        # A client per request (httpx.Client is not for sharing across threads mid-request).
        base = str(clients[i % 2].base_url)
        with httpx.Client(base_url=base, headers=dict(clients[i % 2].headers), timeout=120) as c:
            return c.post("/v3/documents", data={"chunks": bodies[i]}).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(post, range(24)))
    assert sorted(set(codes)) == [201, 403], codes
    assert codes.count(201) == room and codes.count(403) == 24 - room
    docs, chunks, stat_docs, stat_chunks = stored(db, user)
    assert docs == stat_docs == 3 + room and chunks == stat_chunks == 3 + room


# -- chunks ---------------------------------------------------------------------------------------


def test_a_document_past_the_chunk_limit_is_refused_whole(
    make_user, admin: httpx.Client, db: psycopg.Connection
) -> None:
    """Chunked by ragkeep, so the count is known only after chunking: the chunk write refuses it,
    nothing of it is stored, and the error names the limit and the usage."""
    user = make_user("chunks")
    assert user.client.post("/v3/documents", data={"raw_text": paragraphs("with", 1)}).status_code == 201
    before = stored(db, user)
    assert before[1] >= 1
    set_limits(admin, user, {"max_chunks": before[1] + 2})

    long_text = topic("types")  # far more than 2 chunks
    r = user.client.post("/v3/documents", data={"raw_text": long_text})
    assert r.status_code == 403, r.text
    d = detail(r)
    assert d["limit_name"] == "max_chunks" and d["limit"] == before[1] + 2 and d["used"] == before[1]
    assert "max_chunks" in d["message"] and "nothing of it was stored" in d["message"]

    after = stored(db, user)
    assert after[1] == after[3] == before[1], "no chunk of the refused document was written"
    failed = db.execute(
        "SELECT ingestion_status, error, chunk_count FROM documents "
        "WHERE owner_id = %s AND ingestion_status = 'failed'",
        (user.id,),
    ).fetchall()
    assert len(failed) == 1 and failed[0][2] == 0 and "max_chunks" in failed[0][1]

    # What fits is still accepted, up to the limit exactly.
    assert upload_chunks(user.client, 2).status_code == 201
    assert stored(db, user)[1] == before[1] + 2
    r = upload_chunks(user.client, 1)
    assert r.status_code == 403 and detail(r)["limit_name"] == "max_chunks"


def test_ready_made_chunks_over_the_limit_are_refused_before_anything_is_written(
    make_user, admin: httpx.Client, db: psycopg.Connection
) -> None:
    user = make_user("known")
    set_limits(admin, user, {"max_chunks": 5})
    assert upload_chunks(user.client, 3).status_code == 201
    r = upload_chunks(user.client, 3)
    assert r.status_code == 403 and detail(r)["used"] == 3 and "3 chunks" in detail(r)["message"]
    assert stored(db, user) == (1, 3, 1, 3), "the refused document left no row"


def test_concurrent_chunk_writes_at_the_limit_never_end_over(
    make_user, admin: httpx.Client, on_replica, db: psycopg.Connection
) -> None:
    """Room for 7 chunks, 16 documents of 2 chunks at once: 3 fit (6 chunks), never 4."""
    user = make_user("chunkrace")
    set_limits(admin, user, {"max_chunks": 7})
    clients = [user.client, on_replica(user)]
    bodies = [vector_chunks(2, f"cr-{i}-{uuid.uuid4().hex}") for i in range(16)]

    def post(i: int) -> int:
        client = clients[i % 2]
        with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=120) as c:
            return c.post("/v3/documents", data={"chunks": bodies[i]}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, range(16)))
    assert codes.count(201) == 3 and codes.count(403) == 13, codes
    _, chunks, _, stat_chunks = stored(db, user)
    assert chunks == stat_chunks == 6


# -- collections ----------------------------------------------------------------------------------


def test_collection_limit(make_user, admin: httpx.Client) -> None:
    user = make_user("colls")
    set_limits(admin, user, {"max_collections": 2})
    ids = []
    for name in ("a", "b"):
        r = user.client.post("/v3/collections", json={"name": name})
        assert r.status_code == 201
        ids.append(r.json()["results"]["id"])
    r = user.client.post("/v3/collections", json={"name": "c"})
    assert r.status_code == 403, r.text
    d = detail(r)
    assert (d["limit_name"], d["limit"], d["used"]) == ("max_collections", 2, 2)
    assert "own 2 collections" in d["message"]
    assert user.client.delete(f"/v3/collections/{ids[0]}").status_code == 200
    assert user.client.post("/v3/collections", json={"name": "c"}).status_code == 201


def test_concurrent_collection_creation_at_the_limit(
    make_user, admin: httpx.Client, on_replica, db: psycopg.Connection
) -> None:
    user = make_user("collrace")
    set_limits(admin, user, {"max_collections": 3})
    clients = [user.client, on_replica(user)]

    def create(i: int) -> int:
        with httpx.Client(base_url=str(clients[i % 2].base_url), headers=dict(clients[i % 2].headers), timeout=60) as c:
            return c.post("/v3/collections", json={"name": f"c{i}"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(create, range(16)))
    assert codes.count(201) == 3 and codes.count(403) == 13, codes
    assert db.execute("SELECT count(*) FROM collections WHERE owner_id = %s", (user.id,)).fetchone()[0] == 3


# -- upload size ----------------------------------------------------------------------------------


def test_upload_size_limit_is_a_413_naming_limit_and_size(make_user, admin: httpx.Client) -> None:
    user = make_user("size")
    set_limits(admin, user, {"max_file_size": 100})
    assert user.client.post("/v3/documents", data={"raw_text": "x" * 100}).status_code == 201
    r = user.client.post("/v3/documents", data={"raw_text": "y" * 101})
    assert r.status_code == 413, r.text
    d = detail(r)
    assert (d["limit_name"], d["limit"], d["used"]) == ("max_file_size", 100, 101)
    assert d["message"].startswith("raw_text:") and "101 bytes" in d["message"] and "100 bytes" in d["message"]

    r = user.client.post("/v3/documents", files={"file": ("big.txt", b"z" * 150, "text/plain")})
    assert r.status_code == 413 and detail(r)["message"].startswith("file:")
    r = upload_chunks(user.client, 20)  # the texts alone pass 100 bytes
    assert r.status_code == 413 and detail(r)["message"].startswith("chunks:")


def test_upload_size_by_type_override_and_configuration(make_user, admin: httpx.Client, replica) -> None:
    user = make_user("bytype")
    set_limits(admin, user, {"max_file_size_by_type": {"md": 50}})
    md = ("note.md", b"# t\n" + b"m" * 56, "text/markdown")
    r = user.client.post("/v3/documents", files={"file": md})
    assert r.status_code == 413 and detail(r)["limit_name"] == "max_file_size_by_type.md"
    assert user.client.post("/v3/documents", files={"file": ("note.txt", b"t" * 60, "text/plain")}).status_code == 201

    # The replica's TOML has [limits] max_upload_size_by_type = {md = 64}; no override for this user.
    other = make_user("bytype2")
    on_replica = login(replica.base_url, other.email, other.password)
    try:
        r = on_replica.post("/v3/documents", files={"file": ("big.md", b"# t\n" + b"m" * 70, "text/markdown")})
        assert r.status_code == 413
        assert detail(r)["limit_name"] == "max_upload_size_by_type.md" and detail(r)["limit"] == 64
        r = on_replica.post("/v3/documents", files={"file": ("ok.md", b"# t\nfine", "text/markdown")})
        assert r.status_code == 201
    finally:
        on_replica.close()


# -- superusers and overrides ---------------------------------------------------------------------


def test_superusers_are_exempt(admin: httpx.Client) -> None:
    me = admin.get("/v3/users/me").json()["results"]
    before = me["limits_overrides"]
    try:
        assert admin.post(f"/v3/users/{me['id']}", json={"limits_overrides": {"max_documents": 0, "max_collections": 0,
                                                                               "max_file_size": 1}}).status_code == 200
        assert upload_chunks(admin, 1).status_code == 201
        assert admin.post("/v3/collections", json={"name": f"su-{uuid.uuid4().hex[:8]}"}).status_code == 201
    finally:
        admin.post(f"/v3/users/{me['id']}", json={"limits_overrides": before or {}})


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"max_documents": -1}, "max_documents"),
        ({"max_chunks": True}, "max_chunks"),
        ({"global_per_min": 0}, "global_per_min"),
        ({"max_file_size": "big"}, "max_file_size"),
        ({"max_file_size_by_type": {"pdf": -5}}, "max_file_size_by_type.pdf"),
        ({"route_overrides": {"/v3/retrieval/search": {"global_per_min": 5}}}, "global_per_min is set once"),
        ({"route_overrides": {"search": {"route_per_min": 5}}}, "start with /v3/"),
        ({"route_overrides": {"/v3/retrieval/search": {"route_per_min": 0}}}, "route_per_min"),
        ({"route_overrides": {"/v3/documents/{id}": {"route_per_min": 5}}}, "no route '/v3/documents/{id}'"),
    ],
)
def test_bad_overrides_are_a_422_naming_the_key(make_user, admin: httpx.Client, overrides: dict, words: str) -> None:
    user = make_user("bad")
    r = admin.post(f"/v3/users/{user.id}", json={"limits_overrides": overrides})
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]["message"]


def test_only_a_superuser_changes_limits(make_user) -> None:
    user = make_user("self")
    r = user.client.post(f"/v3/users/{user.id}", json={"limits_overrides": {"max_documents": 10**9}})
    assert r.status_code == 403
