"""Retrieval quality, small and fast: the regression guard of ``bench/quality.py``.

The same construction as the benchmark (docs/quality.md) on a subset of the Python reference
topics (:data:`PYDOC_TEST_TOPICS`), through the API with the real model. The thresholds are the
figures of ``bench/quality.py --pydoc --subset`` (recorded in docs/quality.md) minus a margin of
0.03, so that a change which makes chunking, embedding or ranking worse fails here, while a
better one passes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.quality.dataset import PYDOC_TEST_TOPICS, build_queries, parse_rst, pydoc_documents, relevant, score
from tests.quality.evaluate import evaluate, ingest

#: nDCG@10, recall@10, MRR measured by bench/quality.py --pydoc --subset, minus 0.03.
#: Measured: full-text 0.553 / 0.664 / 0.605, semantic 0.770 / 0.850 / 0.846, hybrid 0.786 / 0.879 / 0.847.
THRESHOLDS = {
    "full-text": (0.52, 0.63, 0.57),
    "semantic": (0.74, 0.82, 0.81),
    "hybrid": (0.75, 0.84, 0.81),
}


@pytest.fixture(scope="module")
def results(make_user: Any) -> dict[str, Any]:
    documents = pydoc_documents(PYDOC_TEST_TOPICS)
    queries = build_queries(documents)
    user = make_user("quality")
    spans = ingest(user.client, documents)
    assert all(relevant(q, spans) for q in queries), "every query has an answer in the corpus"
    return evaluate(user.client, queries, spans) | {"queries": queries}


@pytest.fixture(scope="module")
def make_user(base_url: str) -> Any:  # module-scoped: the corpus is ingested once
    from tests.support import register

    made = []

    def _make(prefix: str) -> Any:
        made.append(register(base_url, prefix))
        return made[-1]

    yield _make
    for u in made:
        u.client.close()


def test_the_subset_is_big_enough_to_mean_something(results: dict[str, Any]) -> None:
    assert len(results["queries"]) >= 40


@pytest.mark.parametrize("kind", ["full-text", "semantic", "hybrid"])
def test_quality_does_not_regress(results: dict[str, Any], kind: str) -> None:
    mean = results[kind][0]
    ndcg, recall, mrr = THRESHOLDS[kind]
    assert mean.ndcg >= ndcg and mean.recall >= recall and mean.mrr >= mrr, (
        f"{kind}: nDCG@10 {mean.ndcg:.3f} (>= {ndcg}), recall@10 {mean.recall:.3f} (>= {recall}), "
        f"MRR {mean.mrr:.3f} (>= {mrr})"
    )


def test_hybrid_beats_semantic_beats_full_text(results: dict[str, Any]) -> None:
    nd = {kind: results[kind][0].ndcg for kind in ("full-text", "semantic", "hybrid")}
    assert nd["hybrid"] >= nd["semantic"] >= nd["full-text"], nd


# --- the dataset construction itself --------------------------------------------------------


def test_headings_are_removed_and_sections_located() -> None:
    source = (
        "=====\nTitle\n=====\n\nIntro text.\n\n"
        "First part\n----------\n\nBody of the first part.\n\n"
        "Second\n~~~~~~\nTail.\n"
    )
    doc = parse_rst("d", source)
    assert "Title" not in doc.text and "First part" not in doc.text and "----" not in doc.text
    assert [s.heading for s in doc.sections] == ["Title", "First part", "Second"]
    texts = [doc.text[s.start : s.end].strip() for s in doc.sections]
    assert texts == ["Intro text.", "Body of the first part.", "Tail."]


def test_only_unique_specific_headings_become_queries() -> None:
    body = "Some explanation that is long enough to be a section of its own. " * 5
    a = parse_rst("a", f"Introduction\n============\n{body}\nLocking rules\n-------------\n{body}\n")
    b = parse_rst(
        "b",
        f"Introduction\n============\n{body}\n"
        f"``rcu_read_lock()`` usage\n-------------------------\n{body}\nShort\n-----\nx\n",
    )
    texts = [q.text for q in build_queries([a, b])]
    assert texts == ["Locking rules", "rcu_read_lock() usage"]


def test_scores() -> None:
    s = score(["x", "a", "y", "b"], {"a", "b", "c"})
    assert s.mrr == 0.5 and s.recall == pytest.approx(2 / 3)
    assert 0 < s.ndcg < 1
    assert score(["a", "b", "c"], {"a", "b", "c"}).ndcg == pytest.approx(1.0)
    assert score(["x"], {"a"}).ndcg == 0.0
