"""Full-text, semantic and hybrid search through the API, with R2R's settings and shapes."""

from __future__ import annotations

import json

import pytest

from tests.texts import paragraphs

TOPICS = ("while", "for", "try", "with", "lambda", "import")


@pytest.fixture(scope="module")
def corpus(base_url: str):
    from tests.support import register

    user = register(base_url, "modes")
    ids = {}
    for t in TOPICS:
        r = user.client.post("/v3/documents", data={"raw_text": paragraphs(t, 2), "metadata": json.dumps({"topic": t})})
        assert r.status_code == 201, r.text
        ids[r.json()["results"]["document_id"]] = t
    yield user, ids
    user.client.close()


def run(client, query: str, **settings) -> list[dict]:
    mode = settings.pop("search_mode", "custom")
    r = client.post("/v3/retrieval/search", json={"query": query, "search_mode": mode, "search_settings": settings})
    assert r.status_code == 200, r.text
    return r.json()["results"]["chunk_search_results"]


def test_full_text_matches_words_and_websearch_syntax(corpus) -> None:
    user, ids = corpus
    hits = run(user.client, "exception handlers", use_fulltext_search=True, use_semantic_search=False)
    assert hits and ids[hits[0]["document_id"]] == "try"
    assert all("exception" in h["text"].lower() or "handler" in h["text"].lower() for h in hits)
    assert run(user.client, "xylophonequartz", use_fulltext_search=True, use_semantic_search=False) == []
    excluded = run(user.client, "statement -exception", use_fulltext_search=True, use_semantic_search=False, limit=50)
    assert excluded and all("exception" not in h["text"].lower() for h in excluded)


def test_semantic_finds_meaning_without_shared_words(corpus) -> None:
    user, ids = corpus
    hits = run(user.client, "repeat a block of code as long as a condition holds")
    assert ids[hits[0]["document_id"]] == "while"
    assert all(0 <= h["score"] <= 1 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_hybrid_fuses_ranks_as_r2r_does(corpus) -> None:
    user, ids = corpus
    hs = {"semantic_weight": 3.0, "full_text_weight": 2.0, "rrf_k": 10, "full_text_limit": 50}
    hits = run(
        user.client, "anonymous functions lambda expressions", use_hybrid_search=True, hybrid_settings=hs, limit=5
    )
    assert hits and ids[hits[0]["document_id"]] == "lambda"
    for h in hits:
        sr, fr = h["metadata"]["semantic_rank"], h["metadata"]["full_text_rank"]
        expected = (3.0 / (10 + sr) + 2.0 / (10 + fr)) / 5.0
        assert h["score"] == pytest.approx(expected)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_modes(corpus) -> None:
    user, _ = corpus
    advanced = run(user.client, "import a module", search_mode="advanced")
    assert advanced and "semantic_rank" in advanced[0]["metadata"]  # advanced is hybrid
    basic = run(user.client, "import a module", search_mode="basic")
    assert basic and "semantic_rank" not in basic[0]["metadata"]
    # In basic/advanced mode the fields the caller sets still win.
    assert len(run(user.client, "import a module", search_mode="advanced", limit=2)) == 2


def test_pagination_is_consistent_across_kinds(corpus) -> None:
    user, _ = corpus
    for kind in ({}, {"use_fulltext_search": True, "use_semantic_search": False}, {"use_hybrid_search": True}):
        everything = run(user.client, "statement", limit=20, **kind)
        page2 = run(user.client, "statement", limit=3, offset=3, **kind)
        assert [h["id"] for h in page2] == [h["id"] for h in everything[3:6]], kind


def test_include_flags_and_no_kind(corpus) -> None:
    user, _ = corpus
    h = run(user.client, "loops", include_scores=False, include_metadatas=False)[0]
    assert h["score"] is None and h["metadata"] == {}
    r = user.client.post("/v3/retrieval/search", json={"query": "x", "search_settings": {"use_semantic_search": False}})
    assert r.status_code == 422 and "at least one" in r.json()["detail"]["message"]
