"""The filter language against real rows: types respected, bad filters refused with a path."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from ragkeep.search.filters import FilterError, compile_filters
from tests.texts import paragraphs

ROWS = [
    ("for", {"year": 2020, "lang": "en", "tags": ["loops", "py"], "draft": False, "ref": "10", "nested": {"level": 1}}),
    ("while", {"year": 2021, "lang": "en", "tags": ["loops"], "draft": True, "ref": 10, "nested": {"level": 2}}),
    ("if", {"year": 2019, "lang": "de", "tags": ["branches"], "draft": False}),
    ("try", {"year": "2022", "lang": "EN", "tags": [], "nested": {"level": 3}}),
]


@pytest.fixture(scope="module")
def corpus(base_url: str):
    from tests.support import register

    user = register(base_url, "filters")
    ids = {}
    for topic, meta in ROWS:
        r = user.client.post(
            "/v3/documents", data={"chunks": json.dumps([paragraphs(topic, 1)]), "metadata": json.dumps(meta)}
        )
        assert r.status_code == 201, r.text
        ids[topic] = r.json()["results"]["document_id"]
    yield user, ids
    user.client.close()


def topics(client: httpx.Client, ids: dict[str, str], filters: dict) -> set[str]:
    r = client.post(
        "/v3/retrieval/search",
        json={"query": "python statement", "search_settings": {"filters": filters, "limit": 100}},
    )
    assert r.status_code == 200, r.text
    by_id = {v: k for k, v in ids.items()}
    return {by_id[h["document_id"]] for h in r.json()["results"]["chunk_search_results"]}


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"year": {"$eq": 2020}}, {"for"}),
        ({"year": 2020}, {"for"}),
        ({"year": {"$eq": "2022"}}, {"try"}),  # a string is not the number
        ({"year": {"$gt": 2019}}, {"for", "while"}),  # numbers compare as numbers; "2022" is a string
        ({"year": {"$lte": 2020}}, {"for", "if"}),
        ({"year": {"$in": [2019, 2021]}}, {"if", "while"}),
        ({"year": {"$in": [2019, "2022"]}}, {"if", "try"}),
        ({"year": {"$nin": [2019, 2020, 2021]}}, {"try"}),
        ({"tags": {"$in": ["py", "branches"]}}, {"for", "if"}),  # a list field: any shared element
        ({"tags": {"$nin": ["loops"]}}, {"if", "try"}),
        ({"tags": {"$json_contains": ["loops", "py"]}}, {"for"}),  # R2R's spelling of $contains
        ({"ref": {"$eq": 10}}, {"while"}),
        ({"ref": {"$eq": "10"}}, {"for"}),
        ({"draft": {"$eq": True}}, {"while"}),
        ({"draft": {"$eq": False}}, {"for", "if"}),
        ({"draft": {"$ne": True}}, {"for", "if", "try"}),  # missing counts as not equal
        ({"lang": {"$like": "e%"}}, {"for", "while"}),
        ({"lang": {"$ilike": "e%"}}, {"for", "while", "try"}),
        ({"tags": {"$contains": "loops"}}, {"for", "while"}),
        ({"tags": {"$contains": ["loops", "py"]}}, {"for"}),
        ({"tags": {"$overlap": ["py", "branches"]}}, {"for", "if"}),
        ({"metadata.nested.level": {"$gte": 2}}, {"while", "try"}),
        ({"nested": {"$contains": {"level": 1}}}, {"for"}),
        ({"$or": [{"lang": "de"}, {"year": 2021}]}, {"if", "while"}),
        ({"$and": [{"lang": "en"}, {"draft": False}]}, {"for"}),
        ({"lang": "en", "draft": True}, {"while"}),
        ({"year": {"$gt": 2018, "$lt": 2021}}, {"for", "if"}),
        ({"no_such_key": {"$eq": 1}}, set()),
    ],
)
def test_filter_semantics(corpus, filters: dict, expected: set[str]) -> None:
    user, ids = corpus
    assert topics(user.client, ids, filters) == expected


def test_document_id_filters(corpus) -> None:
    user, ids = corpus
    assert topics(user.client, ids, {"document_id": {"$eq": ids["for"]}}) == {"for"}
    assert topics(user.client, ids, {"document_id": {"$nin": [ids["for"], ids["if"]]}}) == {"while", "try"}
    assert topics(user.client, ids, {"user_id": {"$eq": str(user.id)}}) == set(ids)


@pytest.mark.parametrize(
    "filters, path",
    [
        ({"year": {"$regex": ".*"}}, "filters.year.$regex"),
        ({"$nor": [{"a": 1}]}, "filters.$nor"),
        ({"$or": {"a": 1}}, "filters.$or"),
        ({"$and": []}, "filters.$and"),
        ({"owner_id": {"$eq": "not-a-uuid"}}, "filters.owner_id.$eq"),
        ({"document_id": {"$in": ["x"]}}, "filters.document_id.$in[0]"),
        ({"owner_id": {"$like": "a%"}}, "filters.owner_id.$like"),
        ({"year": {"$gt": [1]}}, "filters.year.$gt"),
        ({"year": {"$in": 5}}, "filters.year.$in"),
        ({"lang": {"$like": 5}}, "filters.lang.$like"),
        ({"lang": "a\u0000b"}, "filters.lang"),
        ({"created_at": {"$gt": "yesterday"}}, "filters.created_at.$gt"),
    ],
)
def test_invalid_filters_are_422_naming_the_path(corpus, filters: dict, path: str) -> None:
    user, _ = corpus
    r = user.client.post("/v3/retrieval/search", json={"query": "x", "search_settings": {"filters": filters}})
    assert r.status_code == 422, r.text
    assert path in r.json()["detail"]["message"], r.json()


@pytest.mark.parametrize(
    "body",
    [
        {"query": "bad \ud800"},
        {"query": "x", "search_settings": {"filters": {"lang": "a\ud800b"}}},
        {"query": "x", "search_settings": {"filters": {"a\ud800": 1}}},
    ],
)
def test_lone_surrogates_are_422(corpus, body: dict) -> None:
    """Escaped lone surrogates are valid JSON but not storable text: refused, never a 500."""
    user, _ = corpus
    raw = json.dumps(body, ensure_ascii=True).encode()
    r = user.client.post("/v3/retrieval/search", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "unicode" in r.json()["detail"]["message"].lower()


def test_deep_nesting_is_refused_not_a_crash(corpus) -> None:
    user, _ = corpus
    f: dict = {"lang": "en"}
    for _ in range(200):
        f = {"$and": [f]}
    r = user.client.post("/v3/retrieval/search", json={"query": "x", "search_settings": {"filters": f}})
    assert r.status_code == 422 and "deeper" in r.json()["detail"]["message"]


def test_compiled_sql_carries_no_values() -> None:
    hostile = "'); DROP TABLE chunks; --"
    compiled = compile_filters({"$or": [{hostile: {"$eq": hostile}}, {"lang": {"$in": [hostile, 1]}}]})
    text = compiled.clause.as_string(None)
    assert "DROP" not in text and hostile not in text
    assert hostile in compiled.params.values() or any(hostile in str(v) for v in compiled.params.values())


def test_empty_filters_compile_to_true() -> None:
    assert compile_filters({}).clause.as_string(None) == "TRUE"
    with pytest.raises(FilterError):
        compile_filters({"a": {"$bogus": 1}})


HOSTILE_TEXT = ["'); DROP TABLE chunks; --", "a'b\"c;d", "%_\\\\", "日本語 ✓ 🚀", "\u202e reversed", "x" * 5000]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_keys_and_values_are_just_data(corpus, text: str) -> None:
    """Quotes, semicolons, SQL, wildcards and unicode in keys and values: correct (empty) results, never a 500."""
    user, ids = corpus
    for filters in (
        {text: {"$eq": text}},
        {"lang": {"$in": [text, 1, True]}},
        {"metadata." + text: {"$like": "%"}},
        {"$or": [{"lang": text}, {text: {"$contains": [text]}}]},
    ):
        assert topics(user.client, ids, filters) == set(), filters
    assert topics(user.client, ids, {"lang": {"$nin": [text]}}) == set(ids)  # nothing excluded: all rows


def test_ten_thousand_values_in_in(corpus) -> None:
    user, ids = corpus
    many = [str(i) for i in range(10_000)] + ["de"]
    assert topics(user.client, ids, {"lang": {"$in": many}}) == {"if"}
    doc_ids = [str(uuid.uuid4()) for _ in range(10_000)] + [ids["for"]]
    assert topics(user.client, ids, {"document_id": {"$in": doc_ids}}) == {"for"}


def test_thousand_deep_nesting_is_refused(corpus) -> None:
    """1,000 levels exceed the JSON parser's own limit: a 400 from the body parser, never a 500."""
    user, _ = corpus
    nested = '{"$and": [' * 1000 + '{"lang": "en"}' + "]}" * 1000
    body = '{"query": "x", "search_settings": {"filters": ' + nested + "}}"
    r = user.client.post("/v3/retrieval/search", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text[:300]
