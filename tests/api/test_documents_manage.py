"""Managing documents after ingestion: metadata, delete by filter, collections, listing, search."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pytest

from tests.texts import paragraphs


def upload(client: httpx.Client, **kw) -> str:
    data = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in kw.items()}
    r = client.post("/v3/documents", data=data)
    assert r.status_code == 201, r.text
    return r.json()["results"]["document_id"]


def search(client: httpx.Client, query: str, filters: dict, limit: int = 100) -> list[dict]:
    r = client.post(
        "/v3/retrieval/search", json={"query": query, "search_settings": {"filters": filters, "limit": limit}}
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]["chunk_search_results"]


def share(settings, owner_id: uuid.UUID, member_id: uuid.UUID, doc_ids: list[str], name: str = "shared") -> uuid.UUID:
    """Collections' routes are being written; membership is set in SQL, as in test_isolation."""
    with psycopg.connect(settings.database.url) as conn:
        cid = conn.execute(
            "INSERT INTO collections (owner_id, name) VALUES (%s, %s) RETURNING id", (owner_id, name)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO collection_users (collection_id, user_id) VALUES (%s, %s), (%s, %s) ON CONFLICT DO NOTHING",
            (cid, owner_id, cid, member_id),
        )
        for table, column in (("documents", "id"), ("chunks", "document_id")):
            conn.execute(
                f"UPDATE {table} SET collection_ids = array_append(collection_ids, %s) "
                f"WHERE {column} = ANY(%s::uuid[])",
                (cid, doc_ids),
            )
    return cid


def delete_by_filter(client: httpx.Client, filters) -> httpx.Response:
    return client.request("DELETE", "/v3/documents/by-filter", json=filters)


def exists(client: httpx.Client, doc_id: str) -> bool:
    return client.get(f"/v3/documents/{doc_id}").status_code == 200


# -- metadata -------------------------------------------------------------------------------------


def test_patch_and_put_metadata_are_seen_by_search_filters_at_once(make_user) -> None:
    user = make_user()
    tag = uuid.uuid4().hex
    doc = upload(
        user.client,
        chunks=[{"text": paragraphs("while", 1), "metadata": {"part": "loop", "lang": "en"}}, paragraphs("for", 1)],
        metadata={"tag": tag, "stage": "draft", "lang": "en"},
    )
    other = upload(user.client, raw_text=paragraphs("try", 1), metadata={"tag": tag, "stage": "draft"})
    query = "repeated execution of a loop"

    r = user.client.patch(f"/v3/documents/{doc}/metadata", json=[{"stage": "review"}, {"stage": "final", "year": 2024}])
    assert r.status_code == 200, r.text
    meta = r.json()["results"]["metadata"]
    assert meta == {"tag": tag, "stage": "final", "year": 2024, "lang": "en"}
    assert user.client.get(f"/v3/documents/{doc}").json()["results"]["metadata"] == meta
    hits = search(user.client, query, {"tag": tag, "stage": {"$eq": "final"}})
    assert {h["document_id"] for h in hits} == {doc} and len(hits) == 2
    assert {h["document_id"] for h in search(user.client, query, {"year": {"$gte": 2024}, "tag": tag})} == {doc}
    assert {h["document_id"] for h in search(user.client, query, {"tag": tag, "stage": "draft"})} == {other}
    # The chunk's own key survives a document-level change.
    assert [h for h in hits if h["metadata"].get("part") == "loop"]

    r = user.client.put(f"/v3/documents/{doc}/metadata", json=[{"tag": tag}, {"topic": "loops"}])
    assert r.status_code == 200, r.text
    assert r.json()["results"]["metadata"] == {"tag": tag, "topic": "loops"}
    assert search(user.client, query, {"tag": tag, "stage": "final"}) == []
    assert search(user.client, query, {"tag": tag, "year": 2024}) == []
    hits = search(user.client, query, {"tag": tag, "topic": "loops"})
    assert {h["document_id"] for h in hits} == {doc} and len(hits) == 2
    chunks = user.client.get(f"/v3/documents/{doc}/chunks").json()["results"]
    assert chunks[0]["metadata"] == {"tag": tag, "topic": "loops", "part": "loop"}
    assert chunks[1]["metadata"] == {"tag": tag, "topic": "loops"}
    # 'lang' was inherited by both chunks (equal to the document's): it goes with the document's.
    assert search(user.client, query, {"tag": tag, "lang": "en"}) == []


def test_metadata_changes_need_ownership_and_valid_bodies(make_user, admin, settings) -> None:
    owner, member, stranger = make_user(), make_user(), make_user()
    doc = upload(owner.client, raw_text=paragraphs("with", 1), metadata={"k": 1})
    share(settings, owner.id, member.id, [doc])
    assert stranger.client.patch(f"/v3/documents/{doc}/metadata", json=[{"k": 2}]).status_code == 404
    assert stranger.client.put(f"/v3/documents/{doc}/metadata", json=[{"k": 2}]).status_code == 404
    assert member.client.get(f"/v3/documents/{doc}").status_code == 200
    assert member.client.patch(f"/v3/documents/{doc}/metadata", json=[{"k": 2}]).status_code == 403
    assert member.client.put(f"/v3/documents/{doc}/metadata", json=[{"k": 2}]).status_code == 403
    for body, words in [
        ("nope", "metadata"),
        ([1], "metadata[0]"),
        ([{"ok": 1}, "x"], "metadata[1]"),
        ([{"a": "nul \u0000"}], "NUL"),
        (None, "metadata"),
    ]:
        r = owner.client.patch(f"/v3/documents/{doc}/metadata", json=body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["detail"]["message"]
    r = owner.client.patch(f"/v3/documents/{doc}/metadata", content=b"[{oops")
    assert r.status_code == 422 and "metadata: the body is not valid JSON" in r.json()["detail"]["message"]
    assert owner.client.get(f"/v3/documents/{doc}").json()["results"]["metadata"] == {"k": 1}
    r = admin.patch(f"/v3/documents/{doc}/metadata", json=[{"k": 3}])
    assert r.status_code == 200 and r.json()["results"]["metadata"] == {"k": 3}
    assert owner.client.patch(f"/v3/documents/{uuid.uuid4()}/metadata", json=[{"k": 2}]).status_code == 404
    # R2R's SDK sends the list as JSON text with no content type.
    r = owner.client.put(f"/v3/documents/{doc}/metadata", content=json.dumps([{"k": 4}, {"j": 5}]))
    assert r.status_code == 200 and r.json()["results"]["metadata"] == {"k": 4, "j": 5}


def test_metadata_is_refused_while_the_document_is_ingested(make_user, settings) -> None:
    user = make_user()
    doc = upload(user.client, raw_text=paragraphs("yield", 1), metadata={"k": 1})
    with psycopg.connect(settings.database.url) as conn:
        conn.execute("UPDATE documents SET ingestion_status = 'embedding' WHERE id = %s", (doc,))
    r = user.client.patch(f"/v3/documents/{doc}/metadata", json=[{"k": 2}])
    assert r.status_code == 409 and "ingested" in r.json()["detail"]["message"]
    with psycopg.connect(settings.database.url) as conn:
        conn.execute("UPDATE documents SET ingestion_status = 'success' WHERE id = %s", (doc,))
    assert user.client.patch(f"/v3/documents/{doc}/metadata", json=[{"k": 2}]).status_code == 200


# -- delete by filter -----------------------------------------------------------------------------


def test_delete_by_filter_reaches_only_the_callers_documents(make_user, admin, settings) -> None:
    a, b = make_user("alice"), make_user("bob")
    tag = uuid.uuid4().hex
    a_x = [upload(a.client, raw_text=paragraphs(t, 1), metadata={"tag": tag, "batch": "x"}) for t in ("with", "raise")]
    a_y = upload(a.client, raw_text=paragraphs("yield", 1), metadata={"tag": tag, "batch": "y"})
    b_x = upload(b.client, raw_text=paragraphs("async", 1), metadata={"tag": tag, "batch": "x"})
    b_y = upload(b.client, raw_text=paragraphs("pass", 1), metadata={"tag": tag, "batch": "y"})
    share(settings, a.id, b.id, [a_y])  # b may read a_y, never delete it

    r = delete_by_filter(a.client, {"tag": tag, "batch": {"$eq": "x"}})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == {"success": True, "deleted_count": 2}
    assert not any(exists(a.client, d) for d in a_x)
    assert exists(b.client, b_x) and exists(a.client, a_y)

    # b's filters name a's document every way; only b's own document goes.
    for f in (
        {"tag": tag, "batch": "y", "owner_id": str(a.id)},
        {"document_id": a_y},
        {"$or": [{"document_id": {"$eq": a_y}}, {"owner_id": {"$ne": str(b.id)}}]},
    ):
        r = delete_by_filter(b.client, f)
        assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 0, (f, r.text)
    assert exists(a.client, a_y)
    r = delete_by_filter(b.client, {"$and": [{"tag": tag}, {"batch": {"$in": ["y"]}}]})
    assert r.json()["results"]["deleted_count"] == 1
    assert not exists(b.client, b_y) and exists(a.client, a_y)

    # A superuser's filter reaches across owners.
    r = delete_by_filter(admin, {"tag": tag})
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 2
    assert not exists(admin, a_y) and not exists(admin, b_x)
    with psycopg.connect(settings.database.url) as conn:
        n = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_id = ANY(%s::uuid[])", ([*a_x, a_y, b_x, b_y],)
        ).fetchone()[0]
        stats = conn.execute(
            "SELECT owner_id, document_count, chunk_count FROM owner_stats WHERE owner_id = ANY(%s::uuid[])",
            ([a.id, b.id],),
        ).fetchall()
    assert n == 0
    assert sorted((d, c) for _, d, c in stats) == [(0, 0), (0, 0)]


@pytest.mark.parametrize(
    "filters, words",
    [
        ({}, "empty filter"),
        ({"$and": [{}]}, "filters.$and[0]: an empty filter"),
        ({"$or": [{}, {"tag": "t"}]}, "filters.$or[0]"),
        ([{"tag": "t"}], "filters: expected a JSON object"),
        ("not json", "filters: not valid JSON"),
        ({"tag": {"$regex": "t"}}, "filters.tag.$regex"),
        ({"owner_id": {"$eq": "not-a-uuid"}}, "filters.owner_id.$eq"),
        ({"created_at": {"$lt": "yesterday"}}, "filters.created_at.$lt"),
        ({"id": str(uuid.uuid4())}, "document_id"),
        ({"$and": [{"chunk_id": str(uuid.uuid4())}]}, "filters.$and[0].chunk_id"),
        ({"tag": "nul \u0000"}, "NUL"),
    ],
)
def test_delete_by_filter_refuses_empty_and_invalid_filters(make_user, admin, filters, words) -> None:
    user = make_user()
    doc = upload(user.client, raw_text=paragraphs("global", 1), metadata={"tag": "t"})
    for client in (user.client, admin):
        r = delete_by_filter(client, filters)
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"]["message"], r.text
    assert exists(user.client, doc)
    r = user.client.request("DELETE", "/v3/documents/by-filter")
    assert r.status_code == 422 and "filters" in r.json()["detail"]["message"]
    assert exists(user.client, doc)


def test_delete_by_filter_as_r2r_clients_send_it(make_user) -> None:
    user = make_user()
    tag = uuid.uuid4().hex
    docs = [
        upload(user.client, raw_text=paragraphs(t, 1), metadata={"tag": tag, "n": i})
        for i, t in enumerate(("del", "return", "import"))
    ]
    kept = upload(user.client, chunks=[paragraphs("class", 1)], metadata={"tag": tag, "n": 9})
    # R2R's SDK: the JSON text as the body, no content type.
    r = user.client.request("DELETE", "/v3/documents/by-filter", content=json.dumps({"tag": tag, "n": {"$lt": 1}}))
    assert r.status_code == 200, r.text
    assert r.json()["results"]["deleted_count"] == 1 and not exists(user.client, docs[0])
    # R2R's cURL example: the filters as a query parameter; document_type as in R2R's chunk metadata.
    r = user.client.request(
        "DELETE",
        "/v3/documents/by-filter",
        params={"filters": json.dumps({"tag": tag, "n": 1, "document_type": {"$eq": "txt"}})},
    )
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 1
    r = user.client.request(
        "DELETE", "/v3/documents/by-filter", params={"filters": json.dumps({"tag": tag, "document_type": "pdf"})}
    )
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 0
    # A JSON string holding the object (R2R's Json[dict] body) is read too.
    r = user.client.request(
        "DELETE", "/v3/documents/by-filter", json=json.dumps({"tag": tag, "metadata.n": {"$gte": 2}, "n": {"$lt": 9}})
    )
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 1
    assert [d for d in docs if exists(user.client, d)] == [] and exists(user.client, kept)
    r = user.client.request("DELETE", "/v3/documents/by-filter", json={"tag": tag}, params={"filters": "{}"})
    assert r.status_code == 422 and "not both" in r.json()["detail"]["message"]


# -- collections, listing, search -----------------------------------------------------------------


def test_document_collections_are_listed_for_those_who_read_it(make_user, admin, settings) -> None:
    owner, member, stranger = make_user(), make_user(), make_user()
    doc = upload(owner.client, raw_text=paragraphs("nonlocal", 1))
    first = share(settings, owner.id, member.id, [doc], "first")
    second = share(settings, owner.id, stranger.id, [doc], "second")
    third = share(settings, owner.id, owner.id, [doc], "third")  # owner-only collection

    page = owner.client.get(f"/v3/documents/{doc}/collections").json()
    assert page["total_entries"] == 3
    assert [c["id"] for c in page["results"]] == [str(third), str(second), str(first)]  # newest first
    c = page["results"][2]
    assert c["name"] == "first" and c["user_count"] == 2 and c["document_count"] == 1 and c["owner_id"] == str(owner.id)
    page = owner.client.get(f"/v3/documents/{doc}/collections", params={"limit": 1, "offset": 1}).json()
    assert page["total_entries"] == 3 and [c["id"] for c in page["results"]] == [str(second)]
    # A member reading through one collection sees that one, not the owner's others.
    page = member.client.get(f"/v3/documents/{doc}/collections").json()
    assert page["total_entries"] == 1 and [c["id"] for c in page["results"]] == [str(first)]
    assert admin.get(f"/v3/documents/{doc}/collections").json()["total_entries"] == 3
    outsider = make_user()
    assert outsider.client.get(f"/v3/documents/{doc}/collections").status_code == 404


def test_list_owner_only(make_user, settings) -> None:
    a, b = make_user(), make_user()
    a_doc = upload(a.client, raw_text=paragraphs("break", 1))
    b_doc = upload(b.client, raw_text=paragraphs("continue", 1))
    share(settings, a.id, b.id, [a_doc])
    listed = b.client.get("/v3/documents").json()
    assert listed["total_entries"] == 2 and {d["id"] for d in listed["results"]} == {a_doc, b_doc}
    own = b.client.get("/v3/documents", params={"owner_only": True}).json()
    assert own["total_entries"] == 1 and [d["id"] for d in own["results"]] == [b_doc]


def test_documents_search_ranks_documents_by_their_best_chunk(make_user) -> None:
    user, other = make_user(), make_user()
    docs = {
        t: upload(user.client, chunks=[paragraphs(t, 1), paragraphs(u, 1), paragraphs(v, 1)], metadata={"topic": t})
        for t, u, v in (("while", "pass", "del"), ("for", "global", "import"), ("try", "class", "return"))
    }
    upload(other.client, raw_text=paragraphs("while", 2))  # another tenant's loop text never shows
    query = "loops that repeat while a condition holds"
    body = {"query": query, "search_settings": {"limit": 10}}
    r = user.client.post("/v3/documents/search", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    ids = [d["id"] for d in results]
    assert sorted(ids) == sorted(docs.values())  # each document once
    assert ids[0] == docs["while"]
    assert all(d["owner_id"] == str(user.id) for d in results)
    # The order and scores are those of each document's best chunk.
    chunks = user.client.post(
        "/v3/chunks/search", json={"query": query, "search_settings": {"limit": 100}}
    ).json()["results"]
    best: dict[str, float] = {}
    for c in chunks:
        best.setdefault(c["document_id"], c["score"])
    assert ids == list(best)
    for d in results:
        assert d["metadata"]["search_score"] == pytest.approx(best[d["id"]])
        assert d["metadata"]["search_type"] == "semantic" and d["metadata"]["topic"]
    # Pages, filters and modes.
    page = user.client.post(
        "/v3/documents/search", json={"query": query, "search_settings": {"limit": 1, "offset": 1}}
    ).json()
    assert [d["id"] for d in page["results"]] == ids[1:2]
    only = user.client.post(
        "/v3/documents/search", json={"query": query, "search_settings": {"filters": {"topic": {"$ne": "while"}}}}
    ).json()["results"]
    assert {d["id"] for d in only} == {docs["for"], docs["try"]}
    hybrid = user.client.post(
        "/v3/documents/search", json={"query": query, "search_mode": "advanced"}
    ).json()["results"]
    assert hybrid[0]["metadata"]["search_type"] == "hybrid" and len({d["id"] for d in hybrid}) == len(hybrid)
    bad = user.client.post(
        "/v3/documents/search", json={"query": query, "search_settings": {"filters": {"topic": {"$nope": 1}}}}
    )
    assert bad.status_code == 422 and "filters.topic.$nope" in bad.json()["detail"]["message"]


def test_r2r_client_manages_documents(base_url, make_user) -> None:
    r2r = pytest.importorskip("r2r")
    user = make_user()
    client = r2r.R2RClient(base_url)
    client.users.login(user.email, user.password)
    tag = uuid.uuid4().hex
    doc = upload(user.client, raw_text=paragraphs("while", 2), metadata={"tag": tag, "n": 1})
    kept = upload(user.client, raw_text=paragraphs("for", 2), metadata={"tag": tag, "n": 2})
    assert client.documents.append_metadata(id=doc, metadata=[{"stage": "final"}]).results.metadata == {
        "tag": tag, "n": 1, "stage": "final"
    }
    replaced = client.documents.replace_metadata(id=doc, metadata=[{"tag": tag}, {"n": 1}])
    assert replaced.results.metadata == {"tag": tag, "n": 1}
    assert client.documents.list(owner_only=True).total_entries == 2
    assert client.documents.list_collections(id=doc).total_entries == 0
    found = client.documents.search(query="repeated execution while a condition is true", search_settings={"limit": 5})
    assert str(found.results[0].id) == doc and found.results[0].metadata["search_score"] > 0
    assert client.documents.delete_by_filter(filters={"tag": tag, "n": {"$eq": 1}}).results.success is True
    assert [str(d.id) for d in client.documents.list().results] == [kept]
    with pytest.raises(r2r.R2RException) as err:
        client.documents.delete_by_filter(filters={})
    assert err.value.status_code == 422
    assert client.documents.list().total_entries == 1
