"""ragkeep.Client and ragkeep.AsyncClient against the real test server (real database and model)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from pydoc_data.topics import topics

import httpx
import pytest

from ragkeep import AsyncClient, Client, RagkeepError
from ragkeep.auth.tokens import TokenIssuer
from tests.client.helpers import bearer, expired, user_client
from tests.support import ADMIN_EMAIL, free_port

# Short passages of real text (one chunk each keeps embedding time low).
PASS = topics["pass"].strip()
LAMBDA = topics["lambda"].strip()
BREAK = topics["break"].strip()
CONTINUE = topics["continue"].strip()
IF = topics["if"].strip()


# -- authentication ---------------------------------------------------------------------------


def test_login_with_email_and_password(base_url: str, make_user) -> None:
    user = make_user("login")
    with Client(base_url, email=user.email, password=user.password) as client:
        assert client.access_token and client.refresh_token
        me = client.users.me()["results"]
        assert me["email"] == user.email and me["id"] == str(user.id)
        assert client.users.retrieve(user.id)["results"]["email"] == user.email


def test_wrong_password_raises_401(base_url: str) -> None:
    with pytest.raises(RagkeepError) as info:
        Client(base_url, email=ADMIN_EMAIL, password="not-the-password")
    assert info.value.status_code == 401
    assert info.value.message == "incorrect email or password"


def test_api_key_login_and_key_management(base_url: str, make_user) -> None:
    user = make_user("apikey")
    with user_client(base_url, user) as client:
        created = client.users.create_api_key(user.id, name="ci", description="for the test")["results"]
        key = created["api_key"]
        with Client(base_url, api_key=key) as keyed:
            assert keyed.access_token is None
            assert keyed.users.me()["results"]["id"] == str(user.id)
        listed = client.users.list_api_keys(user.id)["results"]
        assert [k["key_id"] for k in listed] == [created["key_id"]]
        assert listed[0]["name"] == "ci"
        assert client.users.delete_api_key(user.id, created["key_id"]) == {"results": {"success": True}}
    with Client(base_url, api_key=key) as keyed, pytest.raises(RagkeepError) as info:
        keyed.users.me()
    assert (info.value.status_code, info.value.message) == (401, "invalid API key")


def test_register_through_the_client(base_url: str) -> None:
    email = f"registered-{uuid.uuid4().hex[:8]}@ragkeep.test"
    with Client(base_url) as anonymous:
        made = anonymous.users.create(email, "a-long-password", name="Reg")["results"]
        assert made["email"] == email and made["name"] == "Reg"
        anonymous.users.login(email, "a-long-password")
        assert anonymous.users.me()["results"]["id"] == made["id"]


# -- documents --------------------------------------------------------------------------------


def test_documents_raw_text_file_and_chunks(base_url: str, make_user, tmp_path: Path) -> None:
    user = make_user("docs")
    md = tmp_path / "lambda.md"
    md.write_text(LAMBDA, encoding="utf-8")
    with user_client(base_url, user) as client:
        raw = client.documents.create(raw_text=PASS, metadata={"topic": "pass"})["results"]
        assert raw["message"] == "Document created and ingested successfully."
        fixed_id = uuid.uuid4()
        from_file = client.documents.create(file_path=md, id=fixed_id)["results"]
        assert from_file["document_id"] == str(fixed_id)
        paragraphs = [p for p in BREAK.split("\n\n") if p.strip()][-2:]
        from_chunks = client.documents.create(
            chunks=[paragraphs[0], {"text": paragraphs[1], "metadata": {"part": 2}}], metadata={"topic": "break"}
        )["results"]

        listed = client.documents.list()
        assert listed["total_entries"] == 3
        assert {d["id"] for d in listed["results"]} == {raw["document_id"], str(fixed_id), from_chunks["document_id"]}
        only = client.documents.list(ids=[fixed_id])["results"]
        assert [d["id"] for d in only] == [str(fixed_id)]

        doc = client.documents.retrieve(fixed_id)["results"]
        assert doc["title"] == "lambda.md" and doc["document_type"] == "md"
        assert doc["ingestion_status"] == "success"
        assert client.documents.retrieve(raw["document_id"])["results"]["metadata"] == {"topic": "pass"}

        chunks = client.documents.list_chunks(from_chunks["document_id"])
        assert chunks["total_entries"] == 2
        assert [c["text"] for c in chunks["results"]] == paragraphs
        assert chunks["results"][1]["metadata"] == {"topic": "break", "part": 2}
        assert chunks["results"][0]["vector"] is None
        first = client.documents.list_chunks(raw["document_id"], limit=1)
        assert first["total_entries"] == 1 and "null operation" in first["results"][0]["text"]

        with pytest.raises(RagkeepError) as dup:
            client.documents.create(raw_text=PASS)
        assert dup.value.status_code == 409
        assert raw["document_id"] in dup.value.message
        assert dup.value.detail["document_id"] == raw["document_id"]

        assert client.documents.delete(fixed_id) == {"results": {"success": True}}
        with pytest.raises(RagkeepError) as gone:
            client.documents.retrieve(fixed_id)
        assert gone.value.status_code == 404
        assert gone.value.message == f"document {fixed_id} not found"
        assert client.documents.list()["total_entries"] == 2


def test_list_chunks_with_vectors(base_url: str, make_user) -> None:
    user = make_user("vectors")
    with user_client(base_url, user) as client:
        doc = client.documents.create(raw_text=CONTINUE)["results"]["document_id"]
        chunks = client.documents.list_chunks(doc, include_vectors=True)["results"]
        assert len(chunks) == 1 and len(chunks[0]["vector"]) == 384
        assert all(isinstance(x, float) for x in chunks[0]["vector"])


def test_create_needs_exactly_one_source(base_url: str) -> None:
    with Client(base_url, api_key="unused") as client:
        with pytest.raises(ValueError, match="exactly one"):
            client.documents.create()
        with pytest.raises(ValueError, match="exactly one"):
            client.documents.create(raw_text="a", chunks=["b"])
        with pytest.raises(FileNotFoundError):
            client.documents.create(file_path="/nonexistent/file.txt")


# -- search -----------------------------------------------------------------------------------


def test_search_filtered_to_one_user(base_url: str, make_user, admin: httpx.Client) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with user_client(base_url, alice) as a, user_client(base_url, bob) as b, Client(base_url) as superuser:
        superuser.access_token = bearer(admin)
        a_doc = a.documents.create(raw_text=CONTINUE)["results"]["document_id"]
        b_doc = b.documents.create(raw_text=topics["while"].strip())["results"]["document_id"]
        uid = str(alice.id)

        # The README's call, verbatim: the superuser sees everyone's chunks, the filter keeps Alice's.
        hits = superuser.retrieval.search("query", search_settings={"filters": {"user_id": {"$eq": uid}}})
        results = hits["results"]["chunk_search_results"]
        assert results and {r["owner_id"] for r in results} == {uid}

        everyone = superuser.retrieval.search(
            "continue with the next cycle of the nearest enclosing loop",
            search_settings={"filters": {"document_id": {"$in": [a_doc, b_doc]}}},
        )["results"]["chunk_search_results"]
        assert {r["document_id"] for r in everyone} == {a_doc, b_doc}

        # A user sees only their own documents, with or without filters; UUIDs may be passed as such.
        own = b.retrieval.search("continue statement", search_settings={"limit": 50})["results"]
        assert {r["owner_id"] for r in own["chunk_search_results"]} == {str(bob.id)}
        none = b.retrieval.search("continue", search_settings={"filters": {"user_id": {"$eq": alice.id}}})
        assert none["results"]["chunk_search_results"] == []

        with pytest.raises(RagkeepError) as bad:
            a.retrieval.search("x", search_settings={"filters": {"user_id": {"$regex": "x"}}})
        assert bad.value.status_code == 422 and "$regex" in bad.value.message


# -- token refresh ----------------------------------------------------------------------------


def test_expired_access_token_is_refreshed(base_url: str, make_user, jwt_secret: str) -> None:
    user = make_user("refresh")
    refresh = TokenIssuer(jwt_secret, 60, 7).issue(user.id, "refresh")  # as a log-in would give
    # A client that knows no password: only the refresh token can get it a new access token.
    with Client(base_url) as client:
        client.access_token = expired(jwt_secret, user.id, "access")
        client.refresh_token = refresh
        with pytest.raises(RagkeepError) as info:  # what the server says about such a token
            _raw_me(base_url, client.access_token)
        assert info.value.status_code == 401 and "expired" in info.value.message
        assert client.users.me()["results"]["id"] == str(user.id)
        assert client.access_token and client.refresh_token != refresh
        refreshed = client.users.refresh_token()["results"]
        assert client.access_token == refreshed["access_token"]["token"]


def _raw_me(base_url: str, token: str) -> None:
    """GET /me with exactly this token (no refresh token to fall back on), to see the server's answer."""
    with Client(base_url) as bare:
        bare.access_token = token
        bare.users.me()


def test_expired_refresh_token_falls_back_to_login(base_url: str, make_user, jwt_secret: str) -> None:
    user = make_user("relogin")
    with Client(base_url, email=user.email, password=user.password) as client:
        client.access_token = expired(jwt_secret, user.id, "access")
        client.refresh_token = expired(jwt_secret, user.id, "refresh")
        assert client.users.me()["results"]["email"] == user.email


def test_expired_token_without_a_way_to_refresh_raises(base_url: str, jwt_secret: str) -> None:
    with Client(base_url) as client:
        client.access_token = expired(jwt_secret, uuid.uuid4(), "access")
        with pytest.raises(RagkeepError) as info:
            client.documents.list()
    assert info.value.status_code == 401
    assert info.value.message == "token has expired; log in again or refresh it"


# -- the async client -------------------------------------------------------------------------


def test_async_client(base_url: str, make_user, tmp_path: Path, jwt_secret: str) -> None:
    user = make_user("async")
    txt = tmp_path / "if.txt"
    txt.write_text(IF, encoding="utf-8")

    async def main() -> None:
        async with AsyncClient(base_url, email=user.email, password=user.password) as client:
            assert client.access_token is None  # logs in lazily, on the first call
            me = (await client.users.me())["results"]
            assert me["id"] == str(user.id) and client.access_token

            raw, from_file, from_chunks = await asyncio.gather(
                client.documents.create(raw_text=PASS, metadata={"via": "async"}),
                client.documents.create(file_path=str(txt)),
                client.documents.create(chunks=[LAMBDA]),
            )
            ids = {r["results"]["document_id"] for r in (raw, from_file, from_chunks)}
            listed = await client.documents.list()
            assert listed["total_entries"] == 3 and {d["id"] for d in listed["results"]} == ids
            file_doc = (await client.documents.retrieve(from_file["results"]["document_id"]))["results"]
            assert file_doc["title"] == "if.txt"
            chunks = await client.documents.list_chunks(from_chunks["results"]["document_id"])
            assert [c["text"] for c in chunks["results"]] == [LAMBDA]

            hits = await client.retrieval.search(
                "anonymous functions", search_settings={"filters": {"user_id": {"$eq": str(user.id)}}}
            )
            top = hits["results"]["chunk_search_results"][0]
            assert top["document_id"] == from_chunks["results"]["document_id"]

            with pytest.raises(RagkeepError) as dup:
                await client.documents.create(raw_text=PASS)
            assert dup.value.status_code == 409
            missing = uuid.uuid4()
            with pytest.raises(RagkeepError) as gone:
                await client.documents.delete(missing)
            assert (gone.value.status_code, gone.value.message) == (404, f"document {missing} not found")

            # Expired access token: refreshed once, then the call goes through.
            old_refresh = client.refresh_token
            client.access_token = expired(jwt_secret, user.id, "access")
            assert (await client.documents.delete(raw["results"]["document_id"]))["results"]["success"]
            assert client.refresh_token != old_refresh

            key = (await client.users.create_api_key(user.id))["results"]["api_key"]
        async with AsyncClient(base_url, api_key=key) as keyed:
            assert (await keyed.documents.list())["total_entries"] == 2

    asyncio.run(main())


# -- no server --------------------------------------------------------------------------------


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RagkeepError) as info:
        Client(url, email="someone@ragkeep.test", password="whatever-it-is")
    assert info.value.status_code == 0
    assert url in info.value.message and "ragkeep serve" in info.value.message

    async def main() -> None:
        async with AsyncClient(url, api_key="key") as client:
            await client.retrieval.search("anything")

    with pytest.raises(RagkeepError) as ainfo:
        asyncio.run(main())
    assert ainfo.value.status_code == 0 and "not reachable" in ainfo.value.message
