"""Collections: R2R's routes and shapes, sharing through membership, and everyone else kept out.

Alice owns a collection and shares one document through it with Bob; Eve is nobody to it.
Isolation tests try every route as the wrong person, then check that nothing changed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import httpx
import psycopg
import pytest

from tests.texts import paragraphs

COLLECTION_FIELDS = {
    "id", "owner_id", "name", "description", "graph_cluster_status", "graph_sync_status",
    "created_at", "updated_at", "user_count", "document_count",
}


def upload(client: httpx.Client, topic: str, n: int = 1, **data: str) -> str:
    r = client.post("/v3/documents", data={"raw_text": paragraphs(topic, n), **data})
    assert r.status_code == 201, r.text
    return r.json()["results"]["document_id"]


def create(client: httpx.Client, name: str | None = None, description: str | None = "shared notes") -> dict:
    r = client.post("/v3/collections", json={"name": name or f"c-{uuid.uuid4().hex[:8]}", "description": description})
    assert r.status_code == 201, r.text
    return r.json()["results"]


def hits(client: httpx.Client, query: str, filters: dict | None = None) -> list[dict]:
    settings: dict = {"limit": 100}
    if filters is not None:
        settings["filters"] = filters
    r = client.post("/v3/retrieval/search", json={"query": query, "search_settings": settings})
    assert r.status_code == 200, (filters, r.text)
    return r.json()["results"]["chunk_search_results"]


def collection_ids_in_db(url: str, document_id: str) -> tuple[list, set]:
    """The document's collection_ids and the set of its chunks' (frozen) collection_ids."""
    with psycopg.connect(url) as conn:
        doc = conn.execute("SELECT collection_ids FROM documents WHERE id = %s", (document_id,)).fetchone()
        chunks = conn.execute("SELECT collection_ids FROM chunks WHERE document_id = %s", (document_id,)).fetchall()
    return (doc[0] if doc else None), {tuple(c[0]) for c in chunks}


@pytest.fixture
def shared(make_user, settings):
    """Alice's collection holds her 'with' document and has Bob as a member; her 'yield' document
    stays private; Bob has a document of his own; Eve has nothing to do with any of it."""
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    shared_doc = upload(alice.client, "with", 2)
    private_doc = upload(alice.client, "yield", 1)
    bob_doc = upload(bob.client, "async", 1)
    c = create(alice.client)
    assert alice.client.post(f"/v3/collections/{c['id']}/documents/{shared_doc}").status_code == 200
    assert alice.client.post(f"/v3/collections/{c['id']}/users/{bob.id}").status_code == 200
    return {"alice": alice, "bob": bob, "eve": eve, "cid": c["id"], "shared_doc": shared_doc,
            "private_doc": private_doc, "bob_doc": bob_doc, "url": settings.database.url}


# -- create, list, read, update, delete ---------------------------------------------------------


def test_collection_lifecycle(make_user) -> None:
    alice = make_user("alice")
    c = create(alice.client, "Research notes", "first")
    assert set(c) == COLLECTION_FIELDS
    assert c["owner_id"] == str(alice.id) and c["name"] == "Research notes" and c["description"] == "first"
    assert c["user_count"] == 1 and c["document_count"] == 0  # the creator is owner and member
    me = alice.client.get("/v3/users/me").json()["results"]
    assert c["id"] in me["collection_ids"]

    other = create(alice.client, "documents", None)  # a name that is also a route's word
    listed = alice.client.get("/v3/collections").json()
    assert listed["total_entries"] == 2 and {x["id"] for x in listed["results"]} == {c["id"], other["id"]}
    assert listed["results"][0]["id"] == other["id"]  # newest first
    page = alice.client.get("/v3/collections", params={"limit": 1, "offset": 1}).json()
    assert [x["id"] for x in page["results"]] == [c["id"]] and page["total_entries"] == 2
    past_end = alice.client.get("/v3/collections", params={"offset": 10}).json()
    assert past_end == {"results": [], "total_entries": 2}
    only = alice.client.get("/v3/collections", params={"ids": [c["id"]]}).json()
    assert [x["id"] for x in only["results"]] == [c["id"]] and only["total_entries"] == 1

    assert alice.client.get(f"/v3/collections/{c['id']}").json()["results"] == c
    assert alice.client.get("/v3/collections/name/Research notes").json()["results"]["id"] == c["id"]
    assert alice.client.get("/v3/collections/name/documents").json()["results"]["id"] == other["id"]
    assert alice.client.get("/v3/collections/name/nothing-so-named").status_code == 404

    r = alice.client.post("/v3/collections", json={"name": "Research notes"})
    assert r.status_code == 409 and "name" in r.json()["detail"]["message"]

    r = alice.client.post(f"/v3/collections/{c['id']}", json={"name": "Renamed", "description": "second"})
    assert r.status_code == 200, r.text
    updated = r.json()["results"]
    assert (updated["name"], updated["description"]) == ("Renamed", "second")
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(c["updated_at"])
    assert updated["created_at"] == c["created_at"]
    r = alice.client.post(f"/v3/collections/{c['id']}", json={"description": "third"})
    assert r.json()["results"]["name"] == "Renamed"  # fields not sent stay
    assert alice.client.post(f"/v3/collections/{c['id']}", json={"name": "documents"}).status_code == 409

    r = alice.client.delete(f"/v3/collections/{c['id']}")
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    assert alice.client.get(f"/v3/collections/{c['id']}").status_code == 404
    assert alice.client.delete(f"/v3/collections/{c['id']}").status_code == 404
    assert [x["id"] for x in alice.client.get("/v3/collections").json()["results"]] == [other["id"]]
    assert c["id"] not in alice.client.get("/v3/users/me").json()["results"]["collection_ids"]


BAD_INPUT = [
    ("POST", "/v3/collections", {"description": "no name"}, "name"),
    ("POST", "/v3/collections", {"name": "   "}, "name"),
    ("POST", "/v3/collections", {"name": "x" * 300}, "name"),
    ("POST", "/v3/collections", {"name": "nul\u0000"}, "name"),
    ("POST", "/v3/collections", {"name": "ok", "description": "\ud800"}, "description"),
    ("POST", "/v3/collections/not-a-uuid", {"name": "x"}, "id"),
    ("GET", "/v3/collections?ids=not-a-uuid", None, "ids"),
    ("GET", "/v3/collections?limit=0", None, "limit"),
    ("GET", "/v3/collections/00000000-0000-0000-0000-000000000000/documents?offset=-1", None, "offset"),
    ("POST", "/v3/collections/00000000-0000-0000-0000-000000000000/documents/nope", None, "document_id"),
    ("POST", "/v3/collections/00000000-0000-0000-0000-000000000000/users/nope", None, "user_id"),
]


def test_bad_input_is_422_naming_the_field(make_user) -> None:
    user = make_user()
    for method, path, body, field in BAD_INPUT:
        content = json.dumps(body) if body is not None else None  # ASCII escapes carry NUL and lone surrogates
        r = user.client.request(method, path, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (path, body, r.text)
        assert field in r.json()["detail"]["message"], (path, body, r.text)
    generate = create(user.client)
    r = user.client.post(f"/v3/collections/{generate['id']}", json={"generate_description": "True"})  # as R2R's SDK
    assert r.status_code == 422 and "generate_description" in r.json()["detail"]["message"]


# -- sharing through membership -----------------------------------------------------------------


def test_member_reads_and_searches_shared_chunks(shared) -> None:
    bob, cid = shared["bob"], shared["cid"]
    got = bob.client.get(f"/v3/collections/{cid}").json()["results"]
    assert got["user_count"] == 2 and got["document_count"] == 1
    assert cid in [c["id"] for c in bob.client.get("/v3/collections").json()["results"]]
    # By name, a member names the owner (their own name space is searched otherwise).
    name = got["name"]
    assert bob.client.get(f"/v3/collections/name/{name}").status_code == 404
    r = bob.client.get(f"/v3/collections/name/{name}", params={"owner_id": str(shared["alice"].id)})
    assert r.status_code == 200 and r.json()["results"]["id"] == cid

    docs = bob.client.get(f"/v3/collections/{cid}/documents").json()
    assert docs["total_entries"] == 1 and [d["id"] for d in docs["results"]] == [shared["shared_doc"]]
    assert docs["results"][0]["collection_ids"] == [cid]
    members = bob.client.get(f"/v3/collections/{cid}/users").json()
    assert members["total_entries"] == 2
    assert {m["id"] for m in members["results"]} == {str(shared["alice"].id), str(bob.id)}
    alice_seen_by_bob = next(m for m in members["results"] if m["id"] == str(shared["alice"].id))
    assert alice_seen_by_bob["collection_ids"] == [cid] and alice_seen_by_bob["limits_overrides"] is None

    unfiltered = hits(bob.client, "the with statement context manager")
    assert {h["document_id"] for h in unfiltered} == {shared["shared_doc"], shared["bob_doc"]}
    assert all(cid in h["collection_ids"] for h in unfiltered if h["document_id"] == shared["shared_doc"])
    assert bob.client.get(f"/v3/documents/{shared['shared_doc']}").status_code == 200
    assert bob.client.get(f"/v3/documents/{shared['private_doc']}").status_code == 404


def collection_filters(cid: str) -> list[dict]:
    return [
        {"collection_id": {"$eq": cid}},
        {"collection_ids": {"$overlap": [cid]}},
        {"collection_ids": {"$in": [cid]}},  # R2R issue #1698: a 500 there
        {"collection_ids": {"$contains": [cid]}},
        {"collection_id": cid},
        {"$and": [{"collection_id": {"$eq": cid}}, {"owner_id": {"$ne": str(uuid.uuid4())}}]},
    ]


def test_collection_filter_returns_that_collection_only(shared) -> None:
    """R2R issue #2114: a non-superuser's collection filter also returned their own documents
    outside the collection. Bob's own document matches the query, yet must not come back."""
    alice, bob, eve, cid = shared["alice"], shared["bob"], shared["eve"], shared["cid"]
    assert shared["bob_doc"] in {h["document_id"] for h in hits(bob.client, "async def coroutine")}
    for f in collection_filters(cid):
        found = hits(bob.client, "async def coroutine", f)
        assert found and {h["document_id"] for h in found} == {shared["shared_doc"]}, f
        # The owner's view through the same filter leaves out her private document too.
        found = hits(alice.client, "generator yield expression", f)
        assert {h["document_id"] for h in found} == {shared["shared_doc"]}, f

    # A collection one is not in: the filter finds nothing of it.
    secret = create(alice.client)
    assert alice.client.post(f"/v3/collections/{secret['id']}/documents/{shared['private_doc']}").status_code == 200
    for who in (bob, eve):
        for f in [*collection_filters(secret["id"]), {"collection_ids": {"$overlap": [secret["id"], cid]}}]:
            assert shared["private_doc"] not in {h["document_id"] for h in hits(who.client, "generator yield", f)}, f
    found = {h["document_id"] for h in hits(alice.client, "yield", {"collection_id": secret["id"]})}
    assert found == {shared["private_doc"]}


def test_removing_a_member_revokes_access_at_once(shared) -> None:
    alice, bob, cid, doc = shared["alice"], shared["bob"], shared["cid"], shared["shared_doc"]
    assert doc in {h["document_id"] for h in hits(bob.client, "with statement")}
    r = alice.client.delete(f"/v3/collections/{cid}/users/{bob.id}")
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    assert doc not in {h["document_id"] for h in hits(bob.client, "with statement")}
    assert doc not in {h["document_id"] for h in hits(bob.client, "with statement", {"collection_id": cid})}
    assert bob.client.get(f"/v3/collections/{cid}").status_code == 404
    assert bob.client.get(f"/v3/documents/{doc}").status_code == 404
    assert alice.client.delete(f"/v3/collections/{cid}/users/{bob.id}").status_code == 404  # not a member now
    assert alice.client.get(f"/v3/collections/{cid}").json()["results"]["user_count"] == 1


# -- trying to break in -------------------------------------------------------------------------


def _every_route(cid: str, doc: str, user: str, own_doc: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/v3/collections/{cid}", None),
        ("POST", f"/v3/collections/{cid}", {"name": "taken over"}),
        ("DELETE", f"/v3/collections/{cid}", None),
        ("GET", f"/v3/collections/{cid}/documents", None),
        ("POST", f"/v3/collections/{cid}/documents/{own_doc}", None),
        ("DELETE", f"/v3/collections/{cid}/documents/{doc}", None),
        ("GET", f"/v3/collections/{cid}/users", None),
        ("POST", f"/v3/collections/{cid}/users/{user}", None),
        ("DELETE", f"/v3/collections/{cid}/users/{user}", None),
        ("POST", f"/v3/users/{user}/collections/{cid}", None),
        ("DELETE", f"/v3/users/{user}/collections/{cid}", None),
    ]


def _unchanged(shared) -> None:
    alice, cid = shared["alice"], shared["cid"]
    c = alice.client.get(f"/v3/collections/{cid}").json()["results"]
    assert (c["user_count"], c["document_count"], c["description"]) == (2, 1, "shared notes")
    docs = alice.client.get(f"/v3/collections/{cid}/documents").json()["results"]
    assert [d["id"] for d in docs] == [shared["shared_doc"]]


def test_non_member_gets_404_on_every_route(shared) -> None:
    eve, cid = shared["eve"], shared["cid"]
    eve_doc = upload(eve.client, "raise", 1)
    for method, path, body in _every_route(cid, shared["shared_doc"], str(shared["alice"].id), eve_doc):
        r = eve.client.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    # Her own id on the user-side routes: joining uninvited is not possible (it is in R2R).
    assert eve.client.post(f"/v3/users/{eve.id}/collections/{cid}").status_code == 404
    assert eve.client.post(f"/v3/collections/{cid}/users/{eve.id}").status_code == 404
    name = shared["alice"].client.get(f"/v3/collections/{cid}").json()["results"]["name"]
    r = eve.client.get(f"/v3/collections/name/{name}", params={"owner_id": str(shared["alice"].id)})
    assert r.status_code == 404
    assert cid not in [c["id"] for c in eve.client.get("/v3/collections", params={"ids": [cid]}).json()["results"]]
    assert eve.client.get(f"/v3/users/{shared['alice'].id}/collections").status_code == 403
    _unchanged(shared)
    assert shared["shared_doc"] not in {h["document_id"] for h in hits(eve.client, "with", {"collection_id": cid})}


def test_member_cannot_change_the_collection(shared) -> None:
    bob, eve, cid = shared["bob"], shared["eve"], shared["cid"]
    for method, path, body in _every_route(cid, shared["shared_doc"], str(eve.id), shared["bob_doc"]):
        if method == "GET":
            assert bob.client.get(path).status_code == 200, path
            continue
        r = bob.client.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert bob.client.delete(f"/v3/collections/{cid}/users/{shared['alice'].id}").status_code == 403
    _unchanged(shared)
    assert cid not in eve.client.get("/v3/users/me").json()["results"]["collection_ids"]


def test_cannot_add_someone_elses_document(shared, admin: httpx.Client) -> None:
    alice, bob, cid = shared["alice"], shared["bob"], shared["cid"]
    # Alice cannot see Bob's document: not found.
    assert alice.client.post(f"/v3/collections/{cid}/documents/{shared['bob_doc']}").status_code == 404
    # Bob shares it with Alice through a collection of his own; now she sees it, and still may not add it.
    bobs = create(bob.client)
    assert bob.client.post(f"/v3/collections/{bobs['id']}/documents/{shared['bob_doc']}").status_code == 200
    assert bob.client.post(f"/v3/collections/{bobs['id']}/users/{alice.id}").status_code == 200
    assert alice.client.get(f"/v3/documents/{shared['bob_doc']}").status_code == 200
    r = alice.client.post(f"/v3/collections/{cid}/documents/{shared['bob_doc']}")
    assert r.status_code == 403 and "owner" in r.json()["detail"]["message"]
    doc_collections, chunk_collections = collection_ids_in_db(shared["url"], shared["bob_doc"])
    assert cid not in doc_collections and all(cid not in c for c in chunk_collections)
    # Adding twice is a conflict; a superuser may add anyone's document anywhere.
    assert alice.client.post(f"/v3/collections/{cid}/documents/{shared['shared_doc']}").status_code == 409
    assert admin.post(f"/v3/collections/{cid}/documents/{shared['bob_doc']}").status_code == 200
    assert alice.client.get(f"/v3/collections/{cid}").json()["results"]["document_count"] == 2


# -- keeping documents and chunks consistent ----------------------------------------------------


def test_document_membership_is_kept_in_documents_and_chunks(shared) -> None:
    alice, cid, doc, url = shared["alice"], shared["cid"], shared["shared_doc"], shared["url"]
    second = create(alice.client)
    assert alice.client.post(f"/v3/collections/{second['id']}/documents/{doc}").status_code == 200
    doc_ids, chunk_ids = collection_ids_in_db(url, doc)
    assert [str(x) for x in doc_ids] == [cid, second["id"]]
    assert {tuple(str(x) for x in c) for c in chunk_ids} == {(cid, second["id"])}
    r = alice.client.delete(f"/v3/collections/{cid}/documents/{doc}")
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    doc_ids, chunk_ids = collection_ids_in_db(url, doc)
    assert [str(x) for x in doc_ids] == [second["id"]]
    assert {tuple(str(x) for x in c) for c in chunk_ids} == {(second["id"],)}
    assert alice.client.delete(f"/v3/collections/{cid}/documents/{doc}").status_code == 404
    assert doc not in {h["document_id"] for h in hits(shared["bob"].client, "with statement")}


def test_deleting_a_collection_takes_its_id_out_of_documents_and_chunks(shared) -> None:
    alice, bob, cid, doc, url = shared["alice"], shared["bob"], shared["cid"], shared["shared_doc"], shared["url"]
    assert alice.client.delete(f"/v3/collections/{cid}").status_code == 200
    with psycopg.connect(url) as conn:
        for table in ("documents", "chunks"):
            n = conn.execute(
                f"SELECT count(*) FROM {table} WHERE collection_ids @> ARRAY[%s]::uuid[]", (cid,)
            ).fetchone()[0]
            assert n == 0, table
        assert conn.execute("SELECT count(*) FROM collection_users WHERE collection_id = %s", (cid,)).fetchone()[0] == 0
    assert alice.client.get(f"/v3/documents/{doc}").json()["results"]["collection_ids"] == []  # the document stays
    assert doc not in {h["document_id"] for h in hits(bob.client, "with statement")}
    assert cid not in bob.client.get("/v3/users/me").json()["results"]["collection_ids"]


def test_membership_of_a_document_being_ingested_cannot_change(shared) -> None:
    alice, cid, url = shared["alice"], shared["cid"], shared["url"]
    pending = str(uuid.uuid4())
    with psycopg.connect(url) as conn:  # what an upload still in the background looks like
        conn.execute(
            """INSERT INTO documents (owner_id, id, document_type, content_hash, ingestion_status)
               VALUES (%s, %s, 'txt', %s, 'embedding')""",
            (alice.id, pending, uuid.uuid4().hex),
        )
    r = alice.client.post(f"/v3/collections/{cid}/documents/{pending}")
    assert r.status_code == 409 and "ingested" in r.json()["detail"]["message"]
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE documents SET collection_ids = ARRAY[%s]::uuid[] WHERE id = %s", (cid, pending))
    assert alice.client.delete(f"/v3/collections/{cid}").status_code == 409
    assert alice.client.get(f"/v3/collections/{cid}").status_code == 200
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM documents WHERE id = %s", (pending,))


# -- superusers and the user-side routes --------------------------------------------------------


def test_superuser_sees_and_manages_every_collection(shared, admin: httpx.Client) -> None:
    cid, alice = shared["cid"], shared["alice"]
    assert cid in [c["id"] for c in admin.get("/v3/collections", params={"ids": [cid]}).json()["results"]]
    assert cid not in [c["id"] for c in admin.get("/v3/collections", params={"owner_only": True}).json()["results"]]
    name = admin.get(f"/v3/collections/{cid}").json()["results"]["name"]
    assert admin.get(f"/v3/collections/name/{name}").status_code == 404  # the superuser's own by default
    assert admin.get(f"/v3/collections/name/{name}", params={"owner_id": str(alice.id)}).json()["results"]["id"] == cid
    assert admin.post(f"/v3/collections/{cid}/users/{shared['eve'].id}").status_code == 200
    assert admin.post(f"/v3/collections/{cid}/users/{shared['eve'].id}").status_code == 409
    assert admin.post(f"/v3/collections/{cid}/users/{uuid.uuid4()}").status_code == 404
    assert cid in [c["id"] for c in admin.get(f"/v3/users/{shared['eve'].id}/collections").json()["results"]]
    assert admin.delete(f"/v3/collections/{cid}").status_code == 200


def test_user_side_collection_routes(shared) -> None:
    alice, bob, eve, cid = shared["alice"], shared["bob"], shared["eve"], shared["cid"]
    listed = bob.client.get(f"/v3/users/{bob.id}/collections").json()
    assert [c["id"] for c in listed["results"]] == [cid] and listed["total_entries"] == 1
    assert bob.client.get(f"/v3/users/{alice.id}/collections").status_code == 403
    # The owner adds and removes members from the user's side too.
    r = alice.client.post(f"/v3/users/{eve.id}/collections/{cid}")
    assert r.status_code == 200 and r.json()["results"] == {"success": True}
    assert cid in [c["id"] for c in eve.client.get(f"/v3/users/{eve.id}/collections").json()["results"]]
    assert alice.client.delete(f"/v3/users/{eve.id}/collections/{cid}").status_code == 200
    assert eve.client.get(f"/v3/collections/{cid}").status_code == 404
    # A member may leave (from either side); the owner stays a member of what they own.
    assert alice.client.delete(f"/v3/collections/{cid}/users/{alice.id}").status_code == 409
    assert alice.client.delete(f"/v3/users/{alice.id}/collections/{cid}").status_code == 409
    assert bob.client.delete(f"/v3/users/{bob.id}/collections/{cid}").status_code == 200
    assert bob.client.get(f"/v3/collections/{cid}").status_code == 404
    assert bob.client.get(f"/v3/users/{bob.id}/collections").json() == {"results": [], "total_entries": 0}


# -- R2R's own client ---------------------------------------------------------------------------


def test_r2r_client_manages_collections(base_url: str, shared) -> None:
    r2r = pytest.importorskip("r2r")
    alice, bob, cid, doc = shared["alice"], shared["bob"], shared["cid"], shared["shared_doc"]
    client = r2r.R2RClient(base_url)
    client.users.login(alice.email, alice.password)
    made = client.collections.create(name="via-r2r", description="made by R2R's client").results
    assert made.owner_id == alice.id and made.user_count == 1 and made.document_count == 0
    listed = client.collections.list(ids=[str(made.id), cid])
    assert listed.total_entries == 2 and {str(c.id) for c in listed.results} == {str(made.id), cid}
    assert client.collections.list(owner_only=True).total_entries == 2
    assert client.collections.retrieve(made.id).results.name == "via-r2r"
    assert client.collections.update(made.id, name="renamed-by-r2r").results.name == "renamed-by-r2r"
    assert client.collections.retrieve_by_name("renamed-by-r2r").results.id == made.id
    assert client.collections.add_document(made.id, doc).results.message
    docs = client.collections.list_documents(made.id)
    assert docs.total_entries == 1 and {str(c) for c in docs.results[0].collection_ids} == {cid, str(made.id)}
    assert client.collections.add_user(made.id, bob.id).results.success is True
    assert {str(u.id) for u in client.collections.list_users(made.id).results} == {str(alice.id), str(bob.id)}
    assert str(made.id) in {str(c.id) for c in client.users.list_collections(alice.id).results}
    hits = client.retrieval.search(
        "with statement", search_settings={"filters": {"collection_id": {"$eq": str(made.id)}}, "limit": 50}
    ).results.chunk_search_results
    assert hits and {str(h.document_id) for h in hits} == {doc}
    assert client.collections.remove_user(made.id, bob.id).results.success is True
    assert client.collections.remove_document(made.id, doc).results.success is True
    assert client.collections.delete(made.id).results.success is True
    with pytest.raises(r2r.R2RException) as missing:
        client.collections.retrieve(made.id)
    assert missing.value.status_code == 404


def test_upload_into_a_collection_needs_its_owner(make_user) -> None:
    """Uploading with collection_ids follows the add-document rule: members read, owners change."""
    import json

    from tests.texts import paragraphs

    owner, member, stranger = make_user(), make_user(), make_user()
    cid = owner.client.post("/v3/collections", json={"name": "team"}).json()["results"]["id"]
    assert owner.client.post(f"/v3/collections/{cid}/users/{member.id}").status_code == 200
    data = {"raw_text": paragraphs("pass", 1), "collection_ids": json.dumps([cid])}
    r = member.client.post("/v3/documents", data=data)
    assert r.status_code == 403 and "owner" in r.json()["detail"]["message"]
    assert stranger.client.post("/v3/documents", data=data).status_code == 404
    assert member.client.get("/v3/documents").json()["total_entries"] == 0  # nothing half-written
    r = owner.client.post("/v3/documents", data=data)
    assert r.status_code == 201, r.text
    doc = r.json()["results"]["document_id"]
    assert member.client.get(f"/v3/documents/{doc}").status_code == 200
