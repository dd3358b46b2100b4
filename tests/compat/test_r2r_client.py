"""R2R's own client (``r2r==3.6.6``) against ragkeep, used exactly as an R2R user uses it.

Every call goes through ``R2RClient(base_url)``; the SDK parses each answer into R2R's own
response models (``WrappedSearchResponse``, ``PaginatedR2RResult[...]`` ...), so a pydantic error
from the SDK is a compatibility bug. The assertions check what the answers say: ids, counts, and
who sees what. Where ragkeep deliberately differs from R2R (docs/r2r-compatibility.md), the test
asserts ragkeep's behaviour and says so.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

with warnings.catch_warnings():  # R2R's package still uses pydantic v1-style configs
    warnings.simplefilter("ignore", DeprecationWarning)
    from r2r import HybridSearchSettings, R2RClient, R2RException, SearchMode, SearchSettings

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.texts import paragraphs

# R2R's SDK sends some JSON bodies as text through httpx's `data=`, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


@dataclass
class Account:
    client: R2RClient
    id: uuid.UUID
    email: str
    password: str


def register(base_url: str, prefix: str, **profile: str) -> Account:
    """Register with ``users.create`` and log in with ``users.login``, as an R2R user does."""
    client = R2RClient(base_url, timeout=120)
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@ragkeep.test"
    password = f"pw-{uuid.uuid4().hex}"
    user = client.users.create(email=email, password=password, **profile).results
    client.users.login(email, password)
    return Account(client, user.id, email, password)


@pytest.fixture
def r2r_user(base_url: str) -> Iterator[Callable[[str], Account]]:
    made: list[Account] = []

    def _make(prefix: str = "r2r") -> Account:
        account = register(base_url, prefix)
        made.append(account)
        return account

    yield _make
    for account in made:
        account.client.client.close()


@pytest.fixture(scope="module")
def superuser(base_url: str) -> Iterator[R2RClient]:
    client = R2RClient(base_url, timeout=120)
    client.users.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    yield client
    client.client.close()


def status_of(call: Callable[[], object]) -> int:
    """The status of the R2RException the SDK raises for ``call`` (it must raise one)."""
    with pytest.raises(R2RException) as info:
        call()
    return info.value.status_code


def chunk_docs(results) -> list[uuid.UUID]:  # type: ignore[no-untyped-def]
    return [r.document_id for r in results]


# -- a small corpus for search and filters, owned by one user (module-scoped: read only) ----------


@dataclass
class Corpus:
    reader: Account
    docs: dict[str, uuid.UUID]  # topic -> document id
    chunk_count: int


CORPUS = {
    # topic: (paragraphs, metadata)
    "while": (2, {"kind": "loop", "year": 2019, "tags": ["loops", "statements"]}),
    "for": (2, {"kind": "loop", "year": 2021, "tags": ["loops", "iteration"]}),
    "lambda": (2, {"kind": "function", "year": 2022, "tags": ["functions"]}),
    "try": (1, {"kind": "error", "year": 2020, "tags": ["errors", "statements"]}),
    "with": (1, {"kind": "context", "year": 2023, "tags": ["context"]}),
    "break": (2, {"kind": "loop", "year": 2024, "tags": ["loops", "statements"]}),
}


@pytest.fixture(scope="module")
def corpus(base_url: str) -> Iterator[Corpus]:
    reader = register(base_url, "reader")
    docs = {}
    for topic, (n, meta) in CORPUS.items():
        made = reader.client.documents.create(raw_text=paragraphs(topic, n), metadata={**meta, "topic": topic})
        docs[topic] = made.results.document_id
    chunk_count = reader.client.chunks.list(limit=100).total_entries
    yield Corpus(reader, docs, chunk_count)
    reader.client.client.close()


# -- users: register, log in, me, tokens, API keys, log out --------------------------------------


def test_health_needs_no_credentials(base_url: str) -> None:
    assert R2RClient(base_url).system.health().results.message == "ok"


def test_users_register_login_me_refresh_and_logout(base_url: str) -> None:
    client = R2RClient(base_url)
    email, password = f"ada-{uuid.uuid4().hex[:10]}@ragkeep.test", f"pw-{uuid.uuid4().hex}"
    created = client.users.create(email=email, password=password, name="Ada", bio="engines").results
    assert (created.email, created.name, created.bio) == (email, "Ada", "engines")
    assert created.is_active and not created.is_superuser
    # Deliberate: a taken email is a 409 Conflict (R2R answers 400).
    assert status_of(lambda: client.users.create(email=email, password=password)) == 409
    assert status_of(lambda: R2RClient(base_url).users.login(email, "not-the-password")) == 401

    login = client.users.login(email, password).results
    assert (login.access_token.token_type, login.refresh_token.token_type) == ("access", "refresh")
    assert client.access_token == login.access_token.token
    assert client._user_id == created.id  # the SDK reads it from GET /v3/users/me after logging in
    me = client.users.me().results
    assert (me.id, me.email, me.name) == (created.id, email, "Ada")
    assert client.users.retrieve(created.id).results.email == email
    # ragkeep gives no user a default collection (R2R creates one per user).
    assert me.collection_ids == [] and client.users.list_collections(created.id).total_entries == 0

    old_access, old_refresh = client.access_token, client._refresh_token
    refreshed = client.users.refresh_token().results
    assert client.access_token == refreshed.access_token.token != old_access
    assert client._refresh_token == refreshed.refresh_token.token != old_refresh
    assert client.users.me().results.id == created.id
    replay = R2RClient(base_url)
    replay._refresh_token = old_refresh  # a refresh token works once, as in R2R
    assert status_of(replay.users.refresh_token) == 401

    other_session = R2RClient(base_url)
    other_session.users.login(email, password)
    token = client.access_token
    assert client.users.logout().results.message == "Logged out successfully"
    assert client.access_token is None and client._refresh_token is None
    stale = R2RClient(base_url)
    stale.access_token = token
    assert status_of(stale.users.me) == 401  # the logged-out token is revoked
    assert status_of(client.users.me) == 401  # no credentials at all
    assert other_session.users.me().results.id == created.id  # log-out ends only that session


def test_change_password_ends_the_other_sessions(base_url: str, r2r_user) -> None:
    """R2R's ``change_password(current_password, new_password)``; the client that calls it carries
    on (as with R2R), every other session of the user ends at once (R2R's go on until they expire)."""
    user = r2r_user("pwchange")
    other = R2RClient(base_url, timeout=120)
    other.users.login(user.email, user.password)
    assert other.users.me().results.id == user.id

    new_password = f"pw-{uuid.uuid4().hex}"
    changed = user.client.users.change_password(user.password, new_password).results
    assert changed.message == "Password changed successfully"
    assert user.client.users.me().results.id == user.id
    assert user.client.documents.list().total_entries == 0
    assert status_of(other.users.me) == 401
    assert status_of(other.users.refresh_token) == 401
    assert status_of(user.client.users.refresh_token) == 401  # issued under the old password
    assert status_of(lambda: other.users.login(user.email, user.password)) == 401
    other.users.login(user.email, new_password)
    assert other.users.me().results.id == user.id
    other.client.close()


def test_api_keys_create_use_and_delete(base_url: str, r2r_user) -> None:
    user = r2r_user("keys")
    made = user.client.users.create_api_key(user.id, name="ci", description="compat test").results
    assert made.name == "ci" and made.key_id and made.api_key.startswith(made.public_key)

    keyed = R2RClient(base_url)
    keyed.set_api_key(made.api_key)  # sent as X-API-Key
    assert keyed.users.me().results.id == user.id
    doc = keyed.documents.create(raw_text=paragraphs("pass", 1)).results.document_id
    assert user.client.documents.retrieve(doc).results.owner_id == user.id
    hits = keyed.retrieval.search(query="a null operation placeholder").results.chunk_search_results
    assert chunk_docs(hits) == [doc]

    assert user.client.users.delete_api_key(user.id, made.key_id).results.success is True
    assert status_of(keyed.users.me) == 401
    assert status_of(lambda: user.client.users.delete_api_key(user.id, made.key_id)) == 404


def test_list_api_keys(r2r_user) -> None:
    user = r2r_user("keylist")
    made = user.client.users.create_api_key(user.id, name="ci", description="compat test").results
    listed = user.client.users.list_api_keys(user.id)  # R2R's WrappedAPIKeysResponse is paginated
    assert listed.total_entries == 1
    assert [(k.key_id, k.name, k.description) for k in listed.results] == [(made.key_id, "ci", "compat test")]
    assert listed.results[0].public_key == made.public_key


# -- documents -------------------------------------------------------------------------------------


def test_documents_create_list_retrieve_chunks_and_delete(r2r_user, tmp_path: Path) -> None:
    user = r2r_user("docs")
    c = user.client
    tag = uuid.uuid4().hex
    coll = c.collections.create(name=f"files-{tag[:8]}", description="uploaded files").results

    raw = c.documents.create(raw_text=paragraphs("while", 2), metadata={"tag": tag, "kind": "raw"}).results
    assert raw.message and raw.document_id
    txt = tmp_path / "for-loops.txt"
    txt.write_text(paragraphs("for", 3), encoding="utf-8")
    md = tmp_path / "with-statement.md"
    md.write_text("# The with statement\n\n" + paragraphs("with", 3), encoding="utf-8")
    txt_id = c.documents.create(
        file_path=str(txt), metadata={"tag": tag, "kind": "txt"}, collection_ids=[coll.id]
    ).results.document_id
    md_id = c.documents.create(
        file_path=str(md), metadata={"tag": tag, "kind": "md"}, collection_ids=[str(coll.id)]
    ).results.document_id
    pieces = [paragraphs("lambda", 1), paragraphs("pass", 1), paragraphs("continue", 1)]
    given_id = uuid.uuid4()
    chunked = c.documents.create(chunks=pieces, id=given_id, metadata={"tag": tag, "kind": "chunks"}).results
    assert chunked.document_id == given_id
    ids = {raw.document_id, txt_id, md_id, given_id}

    # Deliberate: identical content from the same owner is a 409 naming the existing document.
    assert status_of(lambda: c.documents.create(raw_text=paragraphs("while", 2))) == 409

    doc = c.documents.retrieve(md_id).results
    assert (doc.id, doc.owner_id, doc.title) == (md_id, user.id, "with-statement.md")
    assert doc.document_type.value == "md" and doc.ingestion_status.value == "success"
    assert doc.collection_ids == [coll.id] and doc.metadata["tag"] == tag and doc.metadata["kind"] == "md"
    assert c.documents.retrieve(txt_id).results.document_type.value == "txt"
    assert c.documents.retrieve(raw.document_id).results.collection_ids == []

    listed = c.documents.list()
    assert listed.total_entries == 4 and {d.id for d in listed.results} == ids
    pages = [c.documents.list(offset=o, limit=3) for o in (0, 3)]
    assert [p.total_entries for p in pages] == [4, 4] and [len(p.results) for p in pages] == [3, 1]
    assert [d.id for p in pages for d in p.results] == [d.id for d in listed.results]
    assert {d.id for d in c.documents.list(ids=[str(md_id), str(txt_id)]).results} == {md_id, txt_id}
    assert {d.id for d in c.collections.list_documents(coll.id).results} == {txt_id, md_id}
    assert [x.id for x in c.documents.list_collections(txt_id).results] == [coll.id]

    chunks = c.documents.list_chunks(given_id)
    assert chunks.total_entries == 3 and [ch.text for ch in chunks.results] == pieces
    assert all(ch.document_id == given_id and ch.owner_id == user.id and ch.vector is None for ch in chunks.results)
    page = c.documents.list_chunks(given_id, offset=1, limit=1)
    assert page.total_entries == 3 and [ch.text for ch in page.results] == pieces[1:2]
    vectors = c.documents.list_chunks(given_id, include_vectors=True, limit=1).results
    assert len(vectors[0].vector or []) == 384
    md_chunks = c.documents.list_chunks(md_id).results
    assert md_chunks and all(ch.collection_ids == [coll.id] for ch in md_chunks)
    assert "with" in " ".join(ch.text for ch in md_chunks)

    found = c.documents.search(query="iterate over the elements of a sequence", search_settings={"limit": 2})
    assert found.results[0].id == txt_id and found.results[0].metadata["search_score"] > 0

    assert c.documents.delete(txt_id).results.success is True
    assert status_of(lambda: c.documents.retrieve(txt_id)) == 404
    assert c.chunks.list(filters={"document_id": {"$eq": str(txt_id)}}).total_entries == 0
    assert c.documents.list().total_entries == 3

    # Deliberate: an empty filter (R2R: every document of the caller) is refused.
    assert status_of(lambda: c.documents.delete_by_filter({})) == 422
    assert c.documents.list().total_entries == 3
    deleted = c.documents.delete_by_filter(
        {"$and": [{"metadata.tag": {"$eq": tag}}, {"metadata.kind": {"$in": ["md", "chunks"]}}]}
    )
    assert deleted.results.success is True
    assert [d.id for d in c.documents.list().results] == [raw.document_id]


def test_duplicates_are_judged_by_content_not_by_file_name(r2r_user, tmp_path: Path) -> None:
    """Deliberate: R2R derives a document's id from its file name (or text) and the user, so the same
    name again is a 409 there; ragkeep gives random ids and refuses identical content instead."""
    c = r2r_user("dupes").client
    paths = []
    for folder, topic in (("a", "del"), ("b", "import")):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "notes.txt")
        paths[-1].write_text(paragraphs(topic, 1), encoding="utf-8")
    first = c.documents.create(file_path=str(paths[0])).results.document_id
    second = c.documents.create(file_path=str(paths[1])).results.document_id
    assert first != second and c.documents.list().total_entries == 2
    copy = tmp_path / "copy.md"
    copy.write_bytes(paths[0].read_bytes())
    with pytest.raises(R2RException) as info:
        c.documents.create(file_path=str(copy))
    assert info.value.status_code == 409 and str(first) in info.value.message
    given = uuid.uuid4()
    c.documents.create(raw_text=paragraphs("assert", 1), id=given)
    assert status_of(lambda: c.documents.create(raw_text=paragraphs("raise", 1), id=given)) == 409  # as R2R
    assert c.documents.list().total_entries == 3


def test_document_metadata_append_and_replace(r2r_user) -> None:
    c = r2r_user("meta").client
    doc = c.documents.create(raw_text=paragraphs("return", 1), metadata={"team": "core", "n": 1}).results.document_id
    appended = c.documents.append_metadata(doc, [{"stage": "draft"}, {"n": 2}]).results
    assert appended.id == doc and appended.metadata == {"team": "core", "n": 2, "stage": "draft"}
    replaced = c.documents.replace_metadata(doc, [{"team": "search"}]).results
    assert replaced.metadata == {"team": "search"}
    assert c.documents.retrieve(doc).results.metadata == {"team": "search"}
    hits = c.retrieval.search(
        query="return from a function", search_settings={"filters": {"metadata.team": {"$eq": "search"}}}
    ).results.chunk_search_results
    assert chunk_docs(hits) == [doc]


# -- chunks ----------------------------------------------------------------------------------------


def test_chunks_list_retrieve_update_search_and_delete(r2r_user) -> None:
    c = r2r_user("chunks").client
    pieces = [paragraphs("lambda", 1), paragraphs("pass", 1), paragraphs("break", 1)]
    doc = c.documents.create(chunks=pieces, metadata={"src": "chunks"}).results.document_id
    other = c.documents.create(raw_text=paragraphs("yield", 1), metadata={"src": "raw"}).results.document_id

    listed = c.chunks.list()
    assert listed.total_entries == 4 and set(chunk_docs(listed.results)) == {doc, other}
    mine = c.chunks.list(filters={"document_id": {"$eq": str(doc)}}, metadata_filter={"src": "chunks"})
    assert mine.total_entries == 3 and sorted(ch.text for ch in mine.results) == sorted(pieces)
    assert c.chunks.list_by_document(doc, metadata_filter={"src": "raw"}).total_entries == 0
    assert c.chunks.list_by_document(doc, limit=2).total_entries == 3

    target = next(ch for ch in mine.results if ch.text == pieces[1])
    got = c.chunks.retrieve(target.id).results
    assert (got.id, got.document_id, got.text) == (target.id, doc, pieces[1])

    new_text = paragraphs("continue", 1)
    updated = c.chunks.update({"id": str(target.id), "text": new_text, "metadata": {"edited": True}}).results
    assert (updated.id, updated.text, updated.metadata["edited"]) == (target.id, new_text, True)
    assert c.chunks.retrieve(target.id).results.text == new_text
    hits = c.chunks.search(query=new_text, search_settings={"limit": 2}).results
    assert hits[0].id == target.id and hits[0].score is not None and hits[0].score > 0.99
    hits = c.chunks.search(query=new_text, search_settings=SearchSettings(limit=2)).results
    assert hits[0].id == target.id

    assert c.chunks.delete(target.id).results.success is True
    assert status_of(lambda: c.chunks.retrieve(target.id)) == 404
    assert c.documents.list_chunks(doc).total_entries == 2
    assert c.documents.retrieve(doc).results.id == doc  # the document stays


# -- retrieval: search modes -----------------------------------------------------------------------


def test_search_basic_mode_is_semantic(corpus: Corpus) -> None:
    c = corpus.reader.client
    res = c.retrieval.search(query="anonymous functions created with lambda expressions", search_mode="basic")
    hits = res.results.chunk_search_results
    assert hits and hits[0].document_id == corpus.docs["lambda"]
    # Semantic search ranks every chunk in scope: R2R's default limit of 10 caps the count.
    assert len(hits) == min(10, corpus.chunk_count)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert all("semantic_rank" not in h.metadata for h in hits)
    assert hits[0].metadata["topic"] == "lambda" and hits[0].owner_id == corpus.reader.id
    # SearchMode members, as the SDK's own signature types them.
    enum_hits = c.retrieval.search(
        query="anonymous functions created with lambda expressions", search_mode=SearchMode.basic
    )
    assert [h.id for h in enum_hits.results.chunk_search_results] == [h.id for h in hits]


def test_search_advanced_mode_is_hybrid(corpus: Corpus) -> None:
    c = corpus.reader.client
    hits = c.retrieval.search(query="exception handlers and cleanup code", search_mode="advanced").results
    found = hits.chunk_search_results
    assert found and found[0].document_id == corpus.docs["try"]
    assert all({"semantic_rank", "full_text_rank"} <= set(h.metadata) for h in found)
    # Settings given with a mode override only the fields they set: still hybrid, now 2 results.
    two = c.retrieval.search(
        query="exception handlers and cleanup code", search_mode="advanced", search_settings={"limit": 2}
    ).results.chunk_search_results
    assert len(two) == 2 and [h.id for h in two] == [h.id for h in found[:2]]
    assert all("semantic_rank" in h.metadata for h in two)


def test_search_custom_full_text(corpus: Corpus) -> None:
    c = corpus.reader.client
    only_text = {"use_semantic_search": False, "use_fulltext_search": True, "limit": 50}
    hits = c.retrieval.search(query="lambda", search_mode="custom", search_settings=only_text)
    found = hits.results.chunk_search_results
    assert found and set(chunk_docs(found)) == {corpus.docs["lambda"]}  # only chunks with the word
    assert all("lambda" in h.text.lower() for h in found)

    statement = c.retrieval.search(query="statement", search_settings=only_text).results.chunk_search_results
    assert len({h.document_id for h in statement}) >= 3
    # Deliberate: full-text honours `limit` (R2R returns hybrid_settings.full_text_limit rows).
    for offset in range(3):
        page = c.retrieval.search(
            query="statement", search_settings={**only_text, "limit": 1, "offset": offset}
        ).results.chunk_search_results
        assert [h.id for h in page] == [statement[offset].id]


def test_search_custom_hybrid_with_settings(corpus: Corpus) -> None:
    c = corpus.reader.client
    hybrid = {
        "use_hybrid_search": True,
        "limit": 3,
        "hybrid_settings": {"full_text_weight": 1.0, "semantic_weight": 5.0, "full_text_limit": 20, "rrf_k": 50},
    }
    query = "the with statement and context managers"
    found = c.retrieval.search(query=query, search_mode="custom", search_settings=hybrid).results.chunk_search_results
    assert len(found) == 3 and found[0].document_id == corpus.docs["with"]
    assert all({"semantic_rank", "full_text_rank"} <= set(h.metadata) for h in found)
    assert found[0].metadata["semantic_rank"] == 1
    scores = [h.score for h in found]
    assert scores == sorted(scores, reverse=True)
    # The same settings as R2R's SearchSettings model (the SDK sends its model_dump()).
    model = SearchSettings(
        use_hybrid_search=True,
        limit=3,
        hybrid_settings=HybridSearchSettings(full_text_weight=1.0, semantic_weight=5.0, full_text_limit=20, rrf_k=50),
    )
    again = c.retrieval.search(query=query, search_settings=model).results.chunk_search_results
    assert [h.id for h in again] == [h.id for h in found]
    # Both kinds on without use_hybrid_search is hybrid too (R2R's precedence).
    both = c.retrieval.search(
        query=query, search_settings={"use_fulltext_search": True, "use_semantic_search": True, "limit": 3}
    ).results.chunk_search_results
    assert all("full_text_rank" in h.metadata for h in both)


# -- filters and pagination ------------------------------------------------------------------------


def search_docs(client: R2RClient, filters: dict, query: str = "python statements") -> set[uuid.UUID]:
    res = client.retrieval.search(query=query, search_settings={"filters": filters, "limit": 100})
    return set(chunk_docs(res.results.chunk_search_results))


def test_nested_filters(corpus: Corpus, superuser: R2RClient) -> None:
    c, d = corpus.reader.client, corpus.docs
    me = str(corpus.reader.id)
    assert search_docs(c, {"$and": [{"metadata.kind": {"$eq": "loop"}}, {"metadata.year": {"$gte": 2020}}]}) == {
        d["for"], d["break"]
    }
    assert search_docs(c, {"$or": [{"document_id": {"$eq": str(d["lambda"])}}, {"kind": {"$eq": "error"}}]}) == {
        d["lambda"], d["try"]
    }
    nested = {
        "$and": [
            {"owner_id": {"$eq": me}},
            {"$or": [{"metadata.year": {"$lt": 2020}}, {"document_id": {"$in": [str(d["with"])]}}]},
        ]
    }
    assert search_docs(c, nested) == {d["while"], d["with"]}
    assert search_docs(c, {"topic": "lambda"}) == {d["lambda"]}  # R2R's shorthand for $eq
    kind_not_2023 = {"metadata.kind": {"$in": ["error", "context"]}, "metadata.year": {"$ne": 2023}}
    assert search_docs(c, kind_not_2023) == {d["try"]}
    assert search_docs(c, {"document_id": {"$nin": [str(d[t]) for t in ("while", "for", "lambda")]}}) == {
        d["try"], d["with"], d["break"]
    }
    # An $or cannot widen a tenant's scope: someone else's id matches nothing of theirs.
    assert search_docs(c, {"$or": [{"owner_id": {"$eq": str(uuid.uuid4())}}, {"owner_id": {"$ne": me}}]}) == set()
    # A superuser sees everyone's; owner_id narrows it to the reader's documents.
    assert search_docs(superuser, {"owner_id": {"$eq": me}}) == set(d.values())
    assert search_docs(superuser, {"$and": [{"user_id": {"$eq": me}}, {"metadata.kind": "function"}]}) == {d["lambda"]}


def test_metadata_filters_keep_json_types(corpus: Corpus) -> None:
    """Deliberate: R2R compares metadata as text cast to the value's type, so "2020" matches 2020, and
    its `$in` on numbers matches nothing (it uses the jsonb `?|` string operator); ragkeep compares
    JSON values as JSON."""
    c, d = corpus.reader.client, corpus.docs
    assert search_docs(c, {"metadata.year": {"$eq": 2020}}) == {d["try"]}
    assert search_docs(c, {"metadata.year": {"$eq": "2020"}}) == set()
    assert search_docs(c, {"metadata.year": {"$in": [2020, 2023]}}) == {d["try"], d["with"]}
    assert search_docs(c, {"metadata.year": {"$gt": 2021, "$lte": 2023}}) == {d["lambda"], d["with"]}
    # List-valued metadata: ragkeep's $overlap (any of) and $contains (all of).
    assert search_docs(c, {"metadata.tags": {"$overlap": ["errors", "context"]}}) == {d["try"], d["with"]}
    assert search_docs(c, {"tags": {"$contains": ["loops", "statements"]}}) == {d["while"], d["break"]}


def test_metadata_in_and_nin_on_list_values(corpus: Corpus) -> None:
    c, d = corpus.reader.client, corpus.docs
    assert search_docs(c, {"metadata.tags": {"$in": ["functions", "context"]}}) == {d["lambda"], d["with"]}
    assert search_docs(c, {"metadata.tags": {"$nin": ["loops"]}}) == {d["lambda"], d["try"], d["with"]}


def test_metadata_json_contains(corpus: Corpus) -> None:
    c, d = corpus.reader.client, corpus.docs
    assert search_docs(c, {"metadata.tags": {"$json_contains": ["loops", "statements"]}}) == {d["while"], d["break"]}
    assert search_docs(c, {"metadata.kind": {"$json_contains": "function"}}) == {d["lambda"]}


def test_invalid_filters_are_422(corpus: Corpus) -> None:
    """Deliberate: R2R quietly turns these into conditions that match nothing; ragkeep says what is wrong."""
    c = corpus.reader.client
    for bad, where in [
        ({"metadata.year": {"$between": [1, 2]}}, "filters.metadata.year.$between"),
        ({"owner_id": {"$eq": "not-a-uuid"}}, "filters.owner_id.$eq"),
        ({"$and": [{"kind": "loop"}, {"document_id": {"$in": "not-a-list"}}]}, "filters.$and[1].document_id.$in"),
        ({"$nor": [{"kind": "loop"}]}, "filters.$nor"),
    ]:
        with pytest.raises(R2RException) as info:
            c.retrieval.search(query="loops", search_settings={"filters": bad})
        assert info.value.status_code == 422 and where in info.value.message, (bad, info.value.message)
    with pytest.raises(R2RException) as info:
        c.chunks.list(filters={"kind": {"$nope": 1}})
    assert info.value.status_code == 422 and "filters.kind.$nope" in info.value.message


def test_pagination_gives_consecutive_pages(corpus: Corpus) -> None:
    c = corpus.reader.client
    assert corpus.chunk_count >= 6
    query = "control flow in loops"
    whole = c.retrieval.search(query=query, search_settings={"limit": 6}).results.chunk_search_results
    pages = [
        c.retrieval.search(query=query, search_settings={"limit": 2, "offset": o}).results.chunk_search_results
        for o in (0, 2, 4)
    ]
    assert [h.id for p in pages for h in p] == [h.id for h in whole] and len(whole) == 6

    hybrid = {"use_hybrid_search": True, "limit": 4}
    whole = c.retrieval.search(query=query, search_settings=hybrid).results.chunk_search_results
    pages = [
        c.retrieval.search(
            query=query, search_settings={**hybrid, "limit": 2, "offset": o}
        ).results.chunk_search_results
        for o in (0, 2)
    ]
    assert [h.id for p in pages for h in p] == [h.id for h in whole]

    chunks = c.chunks.list(limit=100).results
    paged = [c.chunks.list(offset=o, limit=4) for o in range(0, corpus.chunk_count, 4)]
    assert all(p.total_entries == corpus.chunk_count for p in paged)
    assert [ch.id for p in paged for ch in p.results] == [ch.id for ch in chunks]

    docs = c.documents.list().results
    paged_docs = [c.documents.list(offset=o, limit=2) for o in (0, 2, 4)]
    assert [x.id for p in paged_docs for x in p.results] == [x.id for x in docs] and len(docs) == len(CORPUS)


# -- collections and permissions -------------------------------------------------------------------


def test_collections_share_documents_with_members_only(r2r_user, superuser: R2RClient) -> None:
    owner, member, stranger = r2r_user("owner"), r2r_user("member"), r2r_user("stranger")
    o, m, s = owner.client, member.client, stranger.client
    name = f"team-{uuid.uuid4().hex[:8]}"
    coll = o.collections.create(name=name, description="shared notes").results
    assert (coll.name, coll.description, coll.owner_id) == (name, "shared notes", owner.id)
    assert (coll.user_count, coll.document_count) == (1, 0)  # the owner is a member

    query = "the with statement and context managers"
    shared = o.documents.create(raw_text=paragraphs("with", 2), collection_ids=[coll.id]).results.document_id
    private = o.documents.create(raw_text=paragraphs("global", 1)).results.document_id
    own = m.documents.create(raw_text="The with statement wraps a block with a context manager.").results.document_id

    # Before membership: nothing of the owner's is visible; the collection "does not exist".
    assert shared not in search_docs(m, {}, query)
    assert status_of(lambda: m.collections.retrieve(coll.id)) == 404
    assert status_of(lambda: m.documents.retrieve(shared)) == 404

    assert o.collections.add_user(coll.id, member.id).results.success is True
    users = o.collections.list_users(coll.id)
    assert users.total_entries == 2 and {u.id for u in users.results} == {owner.id, member.id}
    got = m.collections.retrieve(coll.id).results
    assert (got.id, got.user_count, got.document_count) == (coll.id, 2, 1)
    assert coll.id in {x.id for x in m.collections.list().results}
    assert [x.id for x in m.users.list_collections(member.id).results] == [coll.id]
    assert [d.id for d in m.collections.list_documents(coll.id).results] == [shared]
    assert m.documents.retrieve(shared).results.owner_id == owner.id
    assert status_of(lambda: m.documents.retrieve(private)) == 404

    # The member's search sees the shared chunks (and their own), never the owner's private ones.
    assert search_docs(m, {}, query) == {shared, own}
    # Deliberate (R2R #2114): a collection filter returns that collection only, not the caller's own.
    assert search_docs(m, {"collection_ids": {"$overlap": [str(coll.id)]}}, query) == {shared}
    # Deliberate (R2R #1698): $in on collection_ids works (a 500 in R2R).
    assert search_docs(m, {"collection_ids": {"$in": [str(coll.id)]}}, query) == {shared}
    assert search_docs(m, {"collection_id": {"$eq": str(coll.id)}}, query) == {shared}
    hits = m.retrieval.search(query=query, search_settings={"limit": 10}).results.chunk_search_results
    assert {h.document_id: h.collection_ids for h in hits} == {shared: [coll.id], own: []}
    assert {h.document_id: h.owner_id for h in hits} == {shared: owner.id, own: member.id}
    assert {d.id for d in m.documents.list().results} == {shared, own}
    assert [d.id for d in m.documents.list(owner_only=True).results] == [own]
    assert [x.id for x in m.collections.list(ids=[str(coll.id)]).results] == [coll.id]
    assert m.collections.list(owner_only=True).total_entries == 0

    # Members read; only the owner (or a superuser) changes the collection.
    assert status_of(lambda: m.collections.update(coll.id, name="taken-over")) == 403
    assert status_of(lambda: m.collections.add_document(coll.id, own)) == 403
    assert status_of(lambda: m.collections.add_user(coll.id, stranger.id)) == 403
    # Someone who is nobody to the collection is told it does not exist.
    assert status_of(lambda: s.collections.retrieve(coll.id)) == 404
    assert status_of(lambda: s.collections.list_documents(coll.id)) == 404
    assert status_of(lambda: s.collections.list_users(coll.id)) == 404
    assert status_of(lambda: s.collections.add_user(coll.id, stranger.id)) == 404
    assert status_of(lambda: s.users.add_to_collection(stranger.id, coll.id)) == 404
    assert status_of(lambda: s.documents.retrieve(shared)) == 404
    assert s.collections.list().total_entries == 0 and search_docs(s, {}, query) == set()

    renamed = o.collections.update(coll.id, name=f"{name}-2", description="renamed").results
    assert (renamed.id, renamed.name, renamed.description) == (coll.id, f"{name}-2", "renamed")
    assert o.collections.retrieve_by_name(f"{name}-2").results.id == coll.id

    assert o.collections.add_document(coll.id, private).results.message
    assert {d.id for d in o.collections.list_documents(coll.id).results} == {shared, private}
    assert private in search_docs(m, {}, "global statement declaration")
    assert [x.id for x in o.documents.list_collections(private).results] == [coll.id]
    assert o.collections.remove_document(coll.id, private).results.success is True
    assert o.collections.list_documents(coll.id).total_entries == 1
    assert private not in search_docs(m, {}, "global statement declaration")
    assert status_of(lambda: m.documents.retrieve(private)) == 404

    assert o.collections.remove_user(coll.id, member.id).results.success is True
    assert search_docs(m, {}, query) == {own}
    assert status_of(lambda: m.collections.retrieve(coll.id)) == 404
    # A superuser may change anyone's collection, through the users routes too.
    assert superuser.users.add_to_collection(member.id, coll.id).results.success is True
    assert shared in search_docs(m, {}, query)
    assert superuser.users.remove_from_collection(member.id, coll.id).results.success is True

    assert o.collections.delete(coll.id).results.success is True
    assert status_of(lambda: o.collections.retrieve(coll.id)) == 404
    kept = o.documents.retrieve(shared).results  # its documents stay with their owner
    assert kept.collection_ids == []


# -- indices ---------------------------------------------------------------------------------------


def test_indices_list_for_superusers(superuser: R2RClient, r2r_user) -> None:
    listed = superuser.indices.list()  # parsed as PaginatedR2RResult[VectorIndicesResponse]
    assert len(listed.results.indices) == min(listed.total_entries, 10)  # the SDK's default limit
    assert all(isinstance(i.index, dict) for i in listed.results.indices)
    vectors = superuser.indices.list(filters={"table_name": "vectors"}, limit=100)
    assert vectors.total_entries == len(vectors.results.indices)
    # Deliberate: listing indices is for superusers (R2R lets any logged-in user list them).
    assert status_of(r2r_user("noindex").client.indices.list) == 403


def test_indices_create_retrieve_delete(superuser: R2RClient, r2r_user) -> None:
    import time

    config = {"table_name": "vectors", "index_method": "hnsw", "index_measure": "cosine_distance",
              "index_arguments": {"m": 8, "ef_construction": 32}, "index_name": "ix_r2r_compat"}
    made = superuser.indices.create(config=config)  # parsed as WrappedGenericMessageResponse
    assert "ix_r2r_compat" in made.results.message
    deadline = time.monotonic() + 120
    while (got := superuser.indices.retrieve("ix_r2r_compat", "vectors").results.index)["status"] != "valid":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert got["method"] == "hnsw" and got["arguments"] == {"m": 8, "ef_construction": 32}
    listed = superuser.indices.list(filters={"table_name": "vectors"}, limit=100)
    assert "ix_r2r_compat" in [i.index["name"] for i in listed.results.indices]
    # Deliberate: dropping an index is for superusers (R2R lets any logged-in user drop one).
    assert status_of(lambda: r2r_user("nodrop").client.indices.delete("ix_r2r_compat", "vectors")) == 403
    assert "dropped" in superuser.indices.delete("ix_r2r_compat", "vectors").results.message
    assert status_of(lambda: superuser.indices.retrieve("ix_r2r_compat", "vectors")) == 404
