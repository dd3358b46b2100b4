"""Every client call beyond log-in, documents and search, against the real server: users, collections,
document metadata and deletion by filter, chunks, indices and health; then the async client."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from ragkeep import AsyncClient, Client, RagkeepError
from ragkeep.config import Settings
from tests.client.helpers import async_user_client, expired, superuser_client, user_client
from tests.texts import paragraphs


def status_of(call, *args, **kwargs) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(RagkeepError) as info:
        call(*args, **kwargs)
    return info.value.status_code, info.value.message


# -- users ------------------------------------------------------------------------------------


def test_users_update_list_limits_and_delete(base_url: str, make_user, admin: httpx.Client) -> None:
    user, other = make_user("profile"), make_user("victim")
    with user_client(base_url, user) as client, superuser_client(base_url, admin) as su:
        updated = client.users.update(
            user.id, name="Ada", bio="writes tests", metadata={"team": "search", "floor": "2"}
        )
        assert updated["results"]["name"] == "Ada" and updated["results"]["bio"] == "writes tests"
        assert updated["results"]["metadata"] == {"team": "search", "floor": "2"}
        again = client.users.update(user.id, metadata={"floor": None})["results"]  # None removes a key
        assert again["metadata"] == {"team": "search"} and again["name"] == "Ada"
        assert client.users.retrieve(user.id)["results"]["bio"] == "writes tests"
        assert status_of(client.users.update, user.id, is_superuser=True)[0] == 403
        assert status_of(client.users.list)[0] == 403

        found = su.users.list(email=user.email.upper())
        assert found["total_entries"] == 1 and found["results"][0]["id"] == str(user.id)
        by_ids = su.users.list(ids=[user.id, other.id])["results"]
        assert {u["email"] for u in by_ids} == {user.email, other.email}

        client.documents.create(raw_text=paragraphs("pass", 1))
        su.users.update(user.id, limits_overrides={"max_documents": 5})
        limits = client.users.get_limits()["results"]  # the caller, named by the token
        assert limits["storage_limits"]["documents"] == {"used": 1, "limit": 5, "remaining": 4}
        assert limits["user_overrides"] == {"max_documents": 5}
        assert su.users.get_limits(user.id)["results"]["storage_limits"]["documents"]["limit"] == 5
        assert su.users.get_limits()["results"]["user_overrides"] == {}  # the superuser's own

        key = client.users.create_api_key(user.id)["results"]["api_key"]
        with Client(base_url, api_key=key) as keyed:
            # An API key does not name its user: the client asks the server once, then remembers.
            assert keyed.users.get_limits()["results"]["storage_limits"]["documents"]["used"] == 1
            assert keyed.users.get_limits()["results"]["user_overrides"] == {"max_documents": 5}
            code, message = status_of(keyed.users.logout)
            assert code == 400 and "API key" in message

        # A superuser deletes someone else's account without a password.
        assert su.users.delete(other.id) == {"results": {"success": True}}
        assert status_of(su.users.retrieve, other.id)[0] == 404
        assert su.access_token is not None

        # Your own account needs your password; then the client forgets its credentials.
        assert status_of(client.users.delete, user.id)[0] == 422
        assert status_of(client.users.delete, user.id, password="not-the-password")[0] == 400
        assert client.users.delete(user.id, password=user.password)["results"]["success"]
        assert client.access_token is None
        assert status_of(su.users.retrieve, user.id)[0] == 404
    with Client(base_url, api_key=key) as keyed:
        assert status_of(keyed.users.me)[0] == 401  # deleted with the account


def test_change_password_and_logout(base_url: str, make_user, jwt_secret: str) -> None:
    user = make_user("password")
    new_password = f"new-{uuid.uuid4().hex}"
    with Client(base_url, email=user.email, password=user.password) as client:
        assert status_of(client.users.change_password, "not-the-password", new_password) == (
            400,
            "current_password: incorrect password",
        )
        changed = client.users.change_password(user.password, new_password)
        assert changed == {"results": {"message": "Password changed successfully"}}
        assert client.refresh_token is None  # the server ended it
        new_email = f"renamed-{uuid.uuid4().hex[:10]}@ragkeep.test"
        assert client.users.update(user.id, email=new_email)["results"]["email"] == new_email
        # When the access token expires the client logs in again, as the new email and password.
        client.access_token = expired(jwt_secret, user.id, "access")
        assert client.users.me()["results"]["email"] == new_email
        assert client.refresh_token is not None
        assert status_of(Client, base_url, email=new_email, password=user.password)[0] == 401

        token = client.access_token
        assert client.users.logout() == {"results": {"message": "Logged out successfully"}}
        assert client.access_token is None and client.refresh_token is None
        assert status_of(client.users.me)[0] == 401  # not logged in again behind the caller's back
    with Client(base_url) as stale:
        stale.access_token = token
        code, message = status_of(stale.users.me)
        assert code == 401 and "revoked" in message


# -- collections ------------------------------------------------------------------------------


def test_collections_share_documents_with_members(base_url: str, make_user) -> None:
    owner, member = make_user("owner"), make_user("member")
    query = "repeated execution as long as an expression is true"
    with user_client(base_url, owner) as o, user_client(base_url, member) as m:
        name = "team notes/2024 ? #1 100%"  # every character that needs escaping in a path
        made = o.collections.create(name, description="shared notes")["results"]
        cid = made["id"]
        assert made["owner_id"] == str(owner.id) and made["document_count"] == 0
        assert o.collections.retrieve(cid)["results"]["description"] == "shared notes"
        assert o.collections.retrieve_by_name(name)["results"]["id"] == cid
        assert o.collections.retrieve_by_name(name, owner_id=owner.id)["results"]["id"] == cid
        assert status_of(m.collections.retrieve_by_name, name, owner_id=owner.id)[0] == 404
        assert [c["id"] for c in o.collections.list(owner_only=True)["results"]] == [cid]
        assert [c["id"] for c in o.collections.list(ids=[cid])["results"]] == [cid]
        renamed = o.collections.update(cid, name="team notes", description="what the team shares")["results"]
        assert (renamed["name"], renamed["description"]) == ("team notes", "what the team shares")
        code, message = status_of(o.collections.update, cid, generate_description=True)
        assert code == 422 and "generate_description" in message

        doc = o.documents.create(raw_text=paragraphs("while", 1))["results"]["document_id"]

        def member_finds() -> bool:
            hits = m.retrieval.search(query)["results"]["chunk_search_results"]
            return doc in {h["document_id"] for h in hits}

        assert not member_finds()
        assert status_of(m.collections.retrieve, cid)[0] == 404

        added = o.collections.add_document(cid, doc)
        assert added == {"results": {"message": "Document assigned to collection successfully"}}
        assert [d["id"] for d in o.collections.list_documents(cid)["results"]] == [doc]
        assert [c["id"] for c in o.documents.list_collections(doc)["results"]] == [cid]

        assert o.collections.add_user(cid, member.id) == {"results": {"success": True}}
        assert member_finds()
        assert m.collections.retrieve(cid)["results"]["name"] == "team notes"
        assert str(member.id) in {u["id"] for u in m.collections.list_users(cid)["results"]}
        assert [c["id"] for c in m.documents.list_collections(doc)["results"]] == [cid]
        assert cid in {c["id"] for c in m.users.list_collections(member.id)["results"]}
        assert status_of(m.collections.add_document, cid, doc)[0] == 403  # members read, owners change

        assert o.collections.remove_user(cid, member.id) == {"results": {"success": True}}
        assert not member_finds()

        # The same membership from the user's side; a member may leave by themselves.
        assert o.users.add_to_collection(member.id, cid) == {"results": {"success": True}}
        assert member_finds()
        assert m.users.remove_from_collection(member.id, cid) == {"results": {"success": True}}
        assert not member_finds()
        assert cid not in {c["id"] for c in m.users.list_collections(member.id)["results"]}

        assert o.collections.remove_document(cid, doc) == {"results": {"success": True}}
        assert o.collections.list_documents(cid)["total_entries"] == 0
        assert o.documents.list_collections(doc)["total_entries"] == 0
        assert o.collections.delete(cid) == {"results": {"success": True}}
        assert status_of(o.collections.retrieve, cid)[0] == 404
        assert o.documents.retrieve(doc)["results"]["id"] == doc  # the document stays


# -- documents: metadata, search, deletion by filter ------------------------------------------


def test_document_metadata_search_and_delete_by_filter(base_url: str, make_user) -> None:
    alice, bob = make_user("meta"), make_user("bystander")
    with user_client(base_url, alice) as a, user_client(base_url, bob) as b:

        def create(client: Client, source: str, **metadata: object) -> str:
            return client.documents.create(raw_text=paragraphs(source, 1), metadata=metadata)["results"]["document_id"]

        old = create(a, "for", year=2019, topic="loops")
        mid = create(a, "try", year=2020)
        new = create(a, "global", year=2024)
        bobs = create(b, "with", year=2019)

        appended = a.documents.append_metadata(new, [{"reviewed": True}, {"topic": "scopes"}])["results"]
        assert appended["metadata"] == {"year": 2024, "reviewed": True, "topic": "scopes"}
        assert a.documents.list_chunks(new)["results"][0]["metadata"]["topic"] == "scopes"  # the chunks follow
        replaced = a.documents.replace_metadata(mid, {"year": 2020, "topic": "errors"})["results"]
        assert replaced["metadata"] == {"year": 2020, "topic": "errors"}
        assert a.documents.retrieve(old)["results"]["metadata"] == {"year": 2019, "topic": "loops"}
        assert status_of(b.documents.append_metadata, new, [{"x": 1}])[0] == 404

        ranked = a.documents.search("exception handlers and cleanup code", search_settings={"limit": 2})["results"]
        assert len(ranked) == 2 and ranked[0]["id"] == mid
        assert ranked[0]["metadata"]["search_score"] >= ranked[1]["metadata"]["search_score"]
        assert ranked[0]["metadata"]["topic"] == "errors"
        only_scopes = a.documents.search("statements", search_settings={"filters": {"topic": {"$eq": "scopes"}}})
        assert [d["id"] for d in only_scopes["results"]] == [new]

        assert a.documents.list(owner_only=True)["total_entries"] == 3
        code, message = status_of(a.documents.delete_by_filter, {})
        assert code == 422 and "empty filter" in message
        gone = a.documents.delete_by_filter({"year": {"$lt": 2021}})
        assert gone == {"results": {"success": True, "deleted_count": 2}}
        assert [d["id"] for d in a.documents.list()["results"]] == [new]
        assert b.documents.retrieve(bobs)["results"]["metadata"] == {"year": 2019}  # not Alice's to delete
        by_id = a.documents.delete_by_filter({"document_id": {"$eq": uuid.UUID(new)}})
        assert by_id["results"]["deleted_count"] == 1 and a.documents.list()["total_entries"] == 0


# -- chunks -----------------------------------------------------------------------------------


def test_chunks_list_update_delete_and_search(base_url: str, make_user) -> None:
    user = make_user("chunks")
    first, second, replacement = paragraphs("pass", 1), paragraphs("lambda", 1), paragraphs("raise", 1)
    with user_client(base_url, user) as client:
        doc = client.documents.create(
            chunks=[first, {"text": second, "metadata": {"part": 2}}], metadata={"topic": "syntax"}
        )["results"]["document_id"]
        listed = client.chunks.list(filters={"document_id": {"$eq": doc}})
        assert listed["total_entries"] == 2 and [c["text"] for c in listed["results"]] == [first, second]
        a_id, b_id = (c["id"] for c in listed["results"])
        assert [c["id"] for c in client.chunks.list(metadata_filter={"part": {"$eq": 2}})["results"]] == [b_id]
        assert len(client.chunks.list(include_vectors=True, limit=1)["results"][0]["vector"]) == 384
        by_doc = client.chunks.list_by_document(doc, metadata_filter={"part": {"$eq": 2}})
        assert [c["id"] for c in by_doc["results"]] == [b_id]
        assert client.documents.list_chunks(doc, filters={"part": {"$eq": 2}})["total_entries"] == 1
        one = client.chunks.retrieve(a_id)["results"]
        assert one["text"] == first and one["vector"] is None
        assert len(client.chunks.retrieve(a_id, include_vectors=True)["results"]["vector"]) == 384

        query = "re-raise the exception that is currently being handled"
        before = client.chunks.search(query, search_settings={"limit": 1})["results"]
        assert before[0]["text"] != replacement
        updated = client.chunks.update({"id": a_id, "text": replacement})["results"]
        assert updated["text"] == replacement and updated["metadata"] == {"topic": "syntax"}
        after = client.chunks.search(query, search_settings={"limit": 1})["results"]
        assert (after[0]["id"], after[0]["text"]) == (a_id, replacement)  # embedded again
        old_words = client.retrieval.search("a null operation placeholder")["results"]["chunk_search_results"]
        assert first not in {h["text"] for h in old_words}

        client.chunks.update({"id": uuid.UUID(a_id), "metadata": {"part": 1}})
        assert client.chunks.retrieve(a_id)["results"]["metadata"] == {"part": 1}
        assert status_of(client.chunks.update, {"id": b_id, "id_typo": 1})[0] == 422

        assert client.chunks.delete(b_id) == {"results": {"success": True}}
        assert status_of(client.chunks.retrieve, b_id)[0] == 404
        assert [c["id"] for c in client.documents.list_chunks(doc)["results"]] == [a_id]
    with pytest.raises(ValueError, match="'id'"):
        Client(base_url).chunks.update({"text": "no id"})


# -- indices and health -----------------------------------------------------------------------


def test_indices_list_and_health(base_url: str, admin: httpx.Client, make_user, settings: Settings) -> None:
    name = "ix_client_test_hnsw"
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(f"CREATE INDEX {name} ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 8)")
    try:
        with superuser_client(base_url, admin) as su, user_client(base_url, make_user("noindex")) as client:
            listed = su.indices.list(filters={"table_name": "vectors"})
            found = [i["index"] for i in listed["results"]["indices"] if i["index"]["name"] == name]
            assert len(found) == 1 and found[0]["method"] == "hnsw" and found[0]["arguments"] == {"m": 8}
            assert listed["total_entries"] >= 1
            assert len(su.indices.list(limit=1)["results"]["indices"]) == 1
            assert status_of(su.indices.list, filters={"table_name": "users"})[0] == 422
            assert status_of(client.indices.list)[0] == 403
    finally:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX {name}")
    with Client(base_url) as anonymous:
        assert anonymous.system.health() == {"results": {"message": "ok"}} == anonymous.health()


# -- the async client -------------------------------------------------------------------------


def test_async_client_covers_the_new_namespaces(base_url: str, make_user) -> None:
    owner, member = make_user("aowner"), make_user("amember")

    async def main() -> None:
        async with (
            async_user_client(base_url, owner) as o,
            async_user_client(base_url, member) as m,
        ):
            cid = (await o.collections.create("async team"))["results"]["id"]
            keep, drop = await asyncio.gather(
                o.documents.create(raw_text=paragraphs("while", 1), metadata={"keep": True}, collection_ids=[cid]),
                o.documents.create(raw_text=paragraphs("for", 1), metadata={"keep": False}, collection_ids=[cid]),
            )
            keep_id, drop_id = keep["results"]["document_id"], drop["results"]["document_id"]
            assert (await o.collections.add_user(cid, member.id))["results"]["success"]
            users, docs = await asyncio.gather(o.collections.list_users(cid), m.collections.list_documents(cid))
            assert str(member.id) in {u["id"] for u in users["results"]}
            assert {d["id"] for d in docs["results"]} == {keep_id, drop_id}

            await o.documents.append_metadata(keep_id, [{"checked": "yes"}])
            gone = await o.documents.delete_by_filter({"keep": {"$eq": False}})
            assert gone["results"]["deleted_count"] == 1
            hits = (await m.documents.search("iterate over the elements of a sequence"))["results"]
            assert [d["id"] for d in hits] == [keep_id] and hits[0]["metadata"]["checked"] == "yes"

            chunk = (await m.chunks.list())["results"][0]
            assert chunk["document_id"] == keep_id
            assert (await m.chunks.retrieve(chunk["id"]))["results"]["text"] == chunk["text"]
            with pytest.raises(RagkeepError) as not_owner:
                await m.chunks.update({"id": chunk["id"], "text": paragraphs("raise", 1)})
            assert not_owner.value.status_code == 403
            await o.chunks.update({"id": chunk["id"], "text": paragraphs("raise", 1)})
            found = (await m.chunks.search("re-raise the active exception", search_settings={"limit": 1}))["results"]
            assert found[0]["id"] == chunk["id"]

            assert (await m.users.remove_from_collection(member.id, cid))["results"]["success"]
            assert (await m.documents.search("iterate over the elements of a sequence"))["results"] == []
            await o.collections.delete(cid)
            assert (await o.users.list_collections(owner.id))["total_entries"] == 0

        # Lazy log-in, then the caller's id read from the new token.
        async with AsyncClient(base_url, email=member.email, password=member.password) as client:
            me = (await client.users.update(member.id, name="Async member"))["results"]
            assert me["name"] == "Async member"
            limits = (await client.users.get_limits())["results"]
            assert limits["storage_limits"]["documents"]["used"] == 0
            token = client.access_token
            assert (await client.users.logout())["results"]["message"] == "Logged out successfully"
            assert client.access_token is None
            with pytest.raises(RagkeepError) as logged_out:
                await client.users.me()
            assert logged_out.value.status_code == 401
        async with AsyncClient(base_url) as stale:
            stale.access_token = token
            with pytest.raises(RagkeepError) as revoked:
                await stale.users.me()
            assert revoked.value.status_code == 401
            assert (await stale.system.health())["results"]["message"] == "ok"

    asyncio.run(main())


def test_indices_create_retrieve_delete_as_developers_md_reads(base_url: str) -> None:
    """DEVELOPERS.md's calls: client.indices.create({...}), .list(), .delete(index_name=..., table_name=...);
    and the scaling guide's keyword form (index_method=..., index_arguments=...), merged over the dict."""
    import time

    from ragkeep import Client
    from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD

    client = Client(base_url, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    client.indices.create({"table_name": "vectors", "index_method": "ivfflat", "index_measure": "cosine_distance",
                           "index_arguments": {"lists": 4}, "index_name": "ix_client_test"},
                          index_method="hnsw", index_arguments={"m": 8, "ef_construction": 32})
    deadline = time.monotonic() + 120
    while (index := client.indices.retrieve("ix_client_test")["results"]["index"])["status"] != "valid":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "USING hnsw" in index["definition"] and "m='8'" in index["definition"], index["definition"]
    names = [i["index"]["name"] for i in client.indices.list()["results"]["indices"]]
    assert "ix_client_test" in names
    assert "dropped" in client.indices.delete(index_name="ix_client_test", table_name="vectors")["results"]["message"]
    assert "ix_client_test" not in [i["index"]["name"] for i in client.indices.list()["results"]["indices"]]
