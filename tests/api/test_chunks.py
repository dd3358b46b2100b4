"""``/v3/chunks``: listing, reading, changing and deleting chunks, with who may do what."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pytest

from tests.api.test_documents_manage import share, upload
from tests.texts import paragraphs


def chunks_of(client: httpx.Client, doc_id: str) -> list[dict]:
    r = client.get(f"/v3/documents/{doc_id}/chunks")
    assert r.status_code == 200, r.text
    return r.json()["results"]


def semantic(client: httpx.Client, query: str, **settings) -> list[dict]:
    r = client.post("/v3/retrieval/search", json={"query": query, "search_settings": {"limit": 100, **settings}})
    assert r.status_code == 200, r.text
    return r.json()["results"]["chunk_search_results"]


@pytest.fixture
def owner_member_stranger(make_user, settings):
    owner, member, stranger = make_user("owner"), make_user("member"), make_user("stranger")
    shared = upload(owner.client, chunks=[paragraphs("assert", 1), paragraphs("while", 1)], metadata={"k": "shared"})
    private = upload(owner.client, chunks=[paragraphs("raise", 1)], metadata={"k": "private"})
    share(settings, owner.id, member.id, [shared])
    return owner, member, stranger, shared, private


def test_list_chunks_is_scoped_paginated_and_filtered(owner_member_stranger, make_user) -> None:
    owner, member, stranger, shared, private = owner_member_stranger
    page = owner.client.get("/v3/chunks", params={"limit": 2}).json()
    assert page["total_entries"] == 3 and len(page["results"]) == 2
    rest = owner.client.get("/v3/chunks", params={"limit": 2, "offset": 2}).json()
    assert rest["total_entries"] == 3 and len(rest["results"]) == 1
    assert {c["id"] for c in page["results"]}.isdisjoint(c["id"] for c in rest["results"])
    past = owner.client.get("/v3/chunks", params={"offset": 10}).json()
    assert past == {"results": [], "total_entries": 3}

    listed = member.client.get("/v3/chunks").json()  # the shared document's chunks, not the private one's
    assert listed["total_entries"] == 2 and {c["document_id"] for c in listed["results"]} == {shared}
    assert stranger.client.get("/v3/chunks").json() == {"results": [], "total_entries": 0}
    # Filters narrow what the caller reads and never widen it.
    for f in (
        {"owner_id": str(owner.id)},
        {"document_id": {"$in": [shared, private]}},
        {"k": {"$in": ["shared", "private"]}},
    ):
        r = stranger.client.get("/v3/chunks", params={"filters": json.dumps(f)})
        assert r.status_code == 200 and r.json()["total_entries"] == 0, f
    r = owner.client.get("/v3/chunks", params={"metadata_filter": json.dumps({"k": "private"})}).json()
    assert r["total_entries"] == 1 and r["results"][0]["document_id"] == private
    r = owner.client.get(
        "/v3/chunks",
        params={"filters": json.dumps({"document_id": shared}), "metadata_filter": json.dumps({"k": "private"})},
    ).json()
    assert r["total_entries"] == 0
    vec = owner.client.get("/v3/chunks", params={"include_vectors": True, "limit": 1}).json()["results"][0]["vector"]
    assert len(vec) == 384
    for params, words in [
        ({"filters": "{bad"}, "filters: not valid JSON"),
        ({"filters": "[1]"}, "filters: expected a JSON object"),
        ({"metadata_filter": json.dumps({"k": {"$bogus": 1}})}, "metadata_filter.k.$bogus"),
        ({"filters": json.dumps({"owner_id": "x"})}, "filters.owner_id.$eq"),
    ]:
        r = owner.client.get("/v3/chunks", params=params)
        assert r.status_code == 422 and words in r.json()["detail"]["message"], (params, r.text)
    # The same filters on one document's chunks (R2R's list_by_document sends metadata_filter).
    r = owner.client.get(
        f"/v3/documents/{shared}/chunks", params={"metadata_filter": json.dumps({"k": "private"})}
    ).json()
    assert r == {"results": [], "total_entries": 0}
    assert owner.client.get(f"/v3/documents/{shared}/chunks").json()["total_entries"] == 2


def test_read_a_chunk(owner_member_stranger, admin) -> None:
    owner, member, stranger, shared, private = owner_member_stranger
    chunk = chunks_of(owner.client, shared)[0]
    private_chunk = chunks_of(owner.client, private)[0]
    for client in (owner.client, member.client, admin):
        r = client.get(f"/v3/chunks/{chunk['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["results"] == chunk
    assert stranger.client.get(f"/v3/chunks/{chunk['id']}").status_code == 404
    assert member.client.get(f"/v3/chunks/{private_chunk['id']}").status_code == 404
    assert owner.client.get(f"/v3/chunks/{uuid.uuid4()}").status_code == 404
    r = owner.client.get("/v3/chunks/not-a-uuid")
    assert r.status_code == 422 and "chunk_id" in r.json()["detail"]["message"]
    with_vec = owner.client.get(f"/v3/chunks/{chunk['id']}", params={"include_vectors": True}).json()["results"]
    assert len(with_vec["vector"]) == 384


def test_update_chunk_text_is_embedded_again_and_searchable(owner_member_stranger, admin) -> None:
    owner, member, stranger, shared, _ = owner_member_stranger
    chunk = chunks_of(owner.client, shared)[0]
    old_text, new_text = chunk["text"], paragraphs("lambda", 1)
    before = semantic(owner.client, old_text)
    assert before[0]["id"] == chunk["id"] and before[0]["score"] > 0.99  # so the next checks can fail

    assert stranger.client.post(f"/v3/chunks/{chunk['id']}", json={"text": new_text}).status_code == 404
    r = member.client.post(f"/v3/chunks/{chunk['id']}", json={"text": new_text})
    assert r.status_code == 403
    assert chunks_of(owner.client, shared)[0]["text"] == old_text

    r = owner.client.post(f"/v3/chunks/{chunk['id']}", json={"id": chunk["id"], "text": new_text})
    assert r.status_code == 200, r.text
    out = r.json()["results"]
    assert out["text"] == new_text and out["metadata"] == chunk["metadata"] and out["id"] == chunk["id"]
    hits = semantic(owner.client, new_text)
    assert hits[0]["id"] == chunk["id"] and hits[0]["score"] > 0.99
    assert all(h["score"] < 0.9 for h in semantic(owner.client, old_text) if h["id"] == chunk["id"])
    # The full-text index followed the text.
    full_text = {"use_semantic_search": False, "use_fulltext_search": True}
    assert [h["id"] for h in semantic(owner.client, "anonymous lambda", **full_text)] == [chunk["id"]]
    assert chunk["id"] not in {h["id"] for h in semantic(owner.client, "debugging assertions", **full_text)}
    # A member reads the new text; metadata alone is replaced, text kept.
    assert member.client.get(f"/v3/chunks/{chunk['id']}").json()["results"]["text"] == new_text
    r = owner.client.post(f"/v3/chunks/{chunk['id']}", json={"metadata": {"k": "edited", "n": 2}})
    assert r.status_code == 200 and r.json()["results"]["metadata"] == {"k": "edited", "n": 2}
    assert r.json()["results"]["text"] == new_text
    assert [h["id"] for h in semantic(owner.client, new_text, filters={"n": 2})] == [chunk["id"]]
    r = admin.post(f"/v3/chunks/{chunk['id']}", json={"metadata": {"k": "by admin"}})
    assert r.status_code == 200 and r.json()["results"]["owner_id"] == str(owner.id)


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "give 'text', 'metadata'"),
        ({"text": "   "}, "text"),
        ({"text": "nul \u0000 here"}, "NUL"),
        ({"metadata": [1, 2]}, "metadata"),
        ('{"metadata": {"a": "lone \\ud800 surrogate"}}', "metadata.a: contains invalid Unicode"),
        ({"id": str(uuid.uuid4()), "text": "some new text"}, "id:"),
        ({"text": "word " * 400}, "the embedding model reads at most 256"),  # would be cut silently
    ],
)
def test_update_chunk_bad_input(make_user, body, words) -> None:
    user = make_user()
    doc = upload(user.client, chunks=[paragraphs("pass", 1)])
    chunk = chunks_of(user.client, doc)[0]
    if isinstance(body, str):  # JSON text that Python cannot encode as a str
        r = user.client.post(f"/v3/chunks/{chunk['id']}", content=body, headers={"Content-Type": "application/json"})
    else:
        r = user.client.post(f"/v3/chunks/{chunk['id']}", json=body)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]["message"]
    assert chunks_of(user.client, doc)[0] == chunk


def test_delete_chunk_keeps_counts(owner_member_stranger, settings) -> None:
    owner, member, stranger, shared, _ = owner_member_stranger
    first, second = chunks_of(owner.client, shared)
    assert stranger.client.delete(f"/v3/chunks/{first['id']}").status_code == 404
    assert member.client.delete(f"/v3/chunks/{first['id']}").status_code == 403
    assert owner.client.get(f"/v3/chunks/{first['id']}").status_code == 200

    r = owner.client.delete(f"/v3/chunks/{first['id']}")
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    assert owner.client.get(f"/v3/chunks/{first['id']}").status_code == 404
    assert owner.client.delete(f"/v3/chunks/{first['id']}").status_code == 404
    doc = owner.client.get(f"/v3/documents/{shared}").json()["results"]
    assert doc["chunk_count"] == 1  # the document stays, one chunk fewer
    assert [c["id"] for c in chunks_of(owner.client, shared)] == [second["id"]]
    assert first["id"] not in {h["id"] for h in semantic(owner.client, first["text"])}
    with psycopg.connect(settings.database.url) as conn:
        stats = conn.execute(
            "SELECT document_count, chunk_count FROM owner_stats WHERE owner_id = %s", (owner.id,)
        ).fetchone()
    assert stats == (2, 2)


@pytest.mark.parametrize(
    "settings_",
    [
        {},
        {"limit": 2, "offset": 1},
        {"use_hybrid_search": True},
        {"use_semantic_search": False, "use_fulltext_search": True},
        {"filters": {"k": "shared"}, "include_metadatas": False},
    ],
)
def test_chunks_search_is_retrieval_search(owner_member_stranger, settings_) -> None:
    owner, member, *_ = owner_member_stranger
    for client in (owner.client, member.client):
        body = {"query": "the while statement and assert", "search_settings": settings_}
        chunks = client.post("/v3/chunks/search", json=body)
        retrieval = client.post("/v3/retrieval/search", json=body)
        assert chunks.status_code == 200, chunks.text
        assert chunks.json()["results"] == retrieval.json()["results"]["chunk_search_results"]
        assert chunks.json()["results"]  # not trivially equal
    r = owner.client.post("/v3/chunks/search", json={"query": "x", "search_settings": {"filters": {"k": {"$nope": 1}}}})
    assert r.status_code == 422 and "filters.k.$nope" in r.json()["detail"]["message"]


def test_r2r_client_manages_chunks(base_url, owner_member_stranger) -> None:
    r2r = pytest.importorskip("r2r")
    owner, _member, _stranger, shared, _private = owner_member_stranger
    client = r2r.R2RClient(base_url)
    client.users.login(owner.email, owner.password)
    listed = client.chunks.list(metadata_filter={"k": "shared"}, limit=10)
    assert listed.total_entries == 2 and {str(c.document_id) for c in listed.results} == {shared}
    chunk_id = listed.results[0].id
    assert client.chunks.retrieve(id=chunk_id).results.text == listed.results[0].text
    new_text = paragraphs("lambda", 1)
    updated = client.chunks.update({"id": str(chunk_id), "text": new_text, "metadata": {"k": "shared", "edited": True}})
    assert updated.results.text == new_text and updated.results.metadata["edited"] is True
    assert client.chunks.list_by_document(document_id=shared, metadata_filter={"edited": True}).total_entries == 1
    hits = client.chunks.search(query=new_text, search_settings={"limit": 3}).results
    assert hits[0].id == chunk_id and hits[0].score > 0.99
    assert client.chunks.delete(id=chunk_id).results.success is True
    assert client.documents.retrieve(id=shared).results.model_dump()["id"] == uuid.UUID(shared)
    assert client.chunks.list().total_entries == 2
