"""Run a :mod:`tests.quality.dataset` evaluation through ragkeep's HTTP API.

Shared by ``bench/quality.py`` and ``tests/quality``: documents go in with ``raw_text`` (so the
stored text is byte for byte the text the section offsets refer to), chunks come back from
``GET /v3/documents/{id}/chunks``, and every query is a ``POST /v3/retrieval/search`` with
``limit = 10`` as the user who owns the documents (who sees nothing else).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.quality.dataset import Document, Query, Scores, locate, mean, relevant, score

KINDS = {
    "full-text": {"use_semantic_search": False, "use_fulltext_search": True},
    "semantic": {"use_semantic_search": True, "use_fulltext_search": False},
    "hybrid": {"use_hybrid_search": True, "use_semantic_search": True, "use_fulltext_search": True},
}


def ingest(
    client: httpx.Client, documents: list[Document], concurrency: int = 4
) -> dict[str, list[tuple[str, int, int]]]:
    """Upload every document; return, per document name, its chunks as (id, start, end)."""

    def one(doc: Document) -> tuple[str, list[tuple[str, int, int]]]:
        r = client.post("/v3/documents", data={"raw_text": doc.text, "metadata": json.dumps({"name": doc.name})})
        r.raise_for_status()
        doc_id = r.json()["results"]["document_id"]
        rows: list[dict[str, str]] = []
        while True:
            page = client.get(f"/v3/documents/{doc_id}/chunks", params={"offset": len(rows), "limit": 1000}).json()
            rows += page["results"]
            if len(rows) >= page["total_entries"] or not page["results"]:
                break
        spans = locate(doc.text, [row["text"] for row in rows])
        return doc.name, [(row["id"], a, b) for row, (a, b) in zip(rows, spans, strict=True)]

    with ThreadPoolExecutor(concurrency) as pool:
        return dict(pool.map(one, documents))


def search_ids(client: httpx.Client, query: str, kind: str, limit: int = 10) -> list[str]:
    r = client.post(
        "/v3/retrieval/search",
        json={"query": query, "search_settings": {**KINDS[kind], "limit": limit}},
    )
    r.raise_for_status()
    return [hit["id"] for hit in r.json()["results"]["chunk_search_results"]]


def evaluate(
    client: httpx.Client,
    queries: list[Query],
    chunk_spans: dict[str, list[tuple[str, int, int]]],
    kinds: tuple[str, ...] = tuple(KINDS),
) -> dict[str, tuple[Scores, list[Scores]]]:
    """Mean scores per kind of search, with the per-query scores (for medians and spreads)."""
    out = {}
    for kind in kinds:
        per_query = [score(search_ids(client, q.text, kind), relevant(q, chunk_spans)) for q in queries]
        out[kind] = (mean(per_query), per_query)
    return out
