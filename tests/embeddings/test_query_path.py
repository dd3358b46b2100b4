"""The query path of the embedders: the LRU cache, queries passing ingestion on the model thread,
and the tokenizers chunkers count with. Real model, real tokenizer files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from ragkeep.config import EmbeddingConfig
from ragkeep.embeddings import EmbeddingError, create_provider
from ragkeep.embeddings.minilm import MiniLMProvider
from ragkeep.embeddings.openai import OpenAICompatibleProvider
from ragkeep.embeddings.tokenizer import default_tokenizer_path, minilm_tokenizer

QUERIES = ["how are exceptions raised", "anonymous functions", "the assignment statement"]


@pytest.fixture(scope="module")
def provider() -> Iterator[MiniLMProvider]:
    p = MiniLMProvider(batch_size=2, query_cache_size=2)
    yield p
    p.close()


def test_repeated_queries_come_from_the_cache(provider: MiniLMProvider) -> None:
    async def main() -> list[np.ndarray]:
        return [await provider.embed_query(q) for q in (QUERIES[0], QUERIES[0], QUERIES[1], QUERIES[0])]

    hits, misses = provider.query_cache_hits, provider.query_cache_misses
    first, again, other, third = asyncio.run(main())
    assert again is first and third is first
    assert provider.query_cache_hits - hits == 2 and provider.query_cache_misses - misses == 2
    np.testing.assert_allclose(first, provider.embed_sync([QUERIES[0]])[0], atol=1e-6)
    assert not np.allclose(first, other)
    with pytest.raises(ValueError):
        first[0] = 1.0  # a cached vector is shared: read-only


def test_the_cache_keeps_the_most_recent_entries(provider: MiniLMProvider) -> None:
    async def main() -> None:
        for q in (QUERIES[0], QUERIES[1], QUERIES[0], QUERIES[2]):  # size 2: QUERIES[1] is evicted
            await provider.embed_query(q)
        misses = provider.query_cache_misses
        await provider.embed_query(QUERIES[0])
        assert provider.query_cache_misses == misses
        await provider.embed_query(QUERIES[1])
        assert provider.query_cache_misses == misses + 1

    asyncio.run(main())


def test_cache_size_zero_turns_it_off() -> None:
    p = MiniLMProvider(threads=1, query_cache_size=0)
    try:
        a, b = asyncio.run(_twice(p, QUERIES[2]))
        assert a is not b and p.query_cache_hits == 0
        np.testing.assert_allclose(a, b, atol=1e-6)
    finally:
        p.close()


async def _twice(p: MiniLMProvider, q: str) -> tuple[np.ndarray, np.ndarray]:
    return await p.embed_query(q), await p.embed_query(q)


def test_a_query_passes_queued_ingestion(provider: MiniLMProvider) -> None:
    """An upload's batches are queued one job each; a query submitted after them runs before
    the rest of them, so it finishes while the upload is still embedding."""
    texts = [topics[k][:1500] for k in sorted(topics)[:24]]  # 12 batches of 2

    async def main() -> tuple[bool, np.ndarray, np.ndarray]:
        upload = asyncio.ensure_future(provider.embed(texts))
        await asyncio.sleep(0.05)  # the upload is tokenised and its batches queued
        while not upload.done() and provider._worker is not None and provider._worker._queue.qsize() < 6:
            await asyncio.sleep(0.01)
        query = await provider.embed_query("priority " + QUERIES[1])
        upload_was_running = not upload.done()
        return upload_was_running, query, await upload

    running, query, vectors = asyncio.run(main())
    assert running
    np.testing.assert_allclose(query, provider.embed_sync(["priority " + QUERIES[1]])[0], atol=1e-5)
    np.testing.assert_allclose(vectors, provider.embed_sync(texts), atol=1e-5)


def test_tokenizer_counts_without_truncating(provider: MiniLMProvider) -> None:
    long = " ".join([topics["assignment"]] * 2)
    tok = provider.tokenizer()
    assert len(tok.encode(long).ids) > 1000  # the model's copy stops at 256
    assert tok.encode("lambda").tokens == ["[CLS]", "lambda", "[SEP]"]


def test_openai_provider_counts_with_the_configured_tokenizer(tmp_path: Path) -> None:
    base = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "dimensions": 384, "max_tokens": 512}
    stand_in = create_provider(EmbeddingConfig(**base))
    assert isinstance(stand_in, OpenAICompatibleProvider) and stand_in.max_tokens == 512
    text = topics["lambda"]
    assert len(stand_in.tokenizer().encode(text).ids) == len(minilm_tokenizer().encode(text).ids)
    # A tokenizer.json of the operator's choosing: here the same file with a lower-casing
    # normaliser removed, which changes the counts of capitalised words.
    data = json.loads(default_tokenizer_path().read_text())
    data["normalizer"]["lowercase"] = False
    custom = tmp_path / "tokenizer.json"
    custom.write_text(json.dumps(data))
    own = create_provider(EmbeddingConfig(**base, tokenizer=custom))
    assert own.tokenizer().encode("Lambda").tokens != stand_in.tokenizer().encode("Lambda").tokens
    with pytest.raises(EmbeddingError, match=r"embedding\.tokenizer"):
        (tmp_path / "broken.json").write_text("{")
        create_provider(EmbeddingConfig(**base, tokenizer=tmp_path / "broken.json"))
    with pytest.raises(EmbeddingError, match="openai provider"):
        create_provider(EmbeddingConfig(tokenizer=custom))
    for p in (stand_in, own):
        p.close()


def test_token_ids_from_the_chunker_give_the_same_vectors(provider: MiniLMProvider) -> None:
    texts = [topics["lambda"][:800], topics["pass"][:300], topics["assignment"]]  # the last is > 256 tokens
    ids = [provider.tokenizer().encode(t).ids for t in texts]
    assert len(ids[2]) > provider.max_tokens
    expected = provider.embed_sync(texts)
    # Over-window ids are not used as given: the model's own (truncating) tokenizer runs instead.
    np.testing.assert_allclose(asyncio.run(provider.embed(texts, ids)), expected, atol=1e-5)
    np.testing.assert_allclose(asyncio.run(provider.embed(texts[:2], ids[:2])), expected[:2], atol=1e-5)
    # They are used when they fit: ids of another text give that text's vector.
    swapped = asyncio.run(provider.embed(texts[:2], [ids[1], ids[0]]))
    np.testing.assert_allclose(swapped, expected[[1, 0]], atol=1e-5)


def test_cache_entries_are_kept_per_key(provider: MiniLMProvider) -> None:
    """A hit is faster than a miss: per-user keys stop one tenant timing another's searches."""

    async def main() -> None:
        a = await provider.embed_query("per user " + QUERIES[0], cache_key="user-a")
        misses = provider.query_cache_misses
        b = await provider.embed_query("per user " + QUERIES[0], cache_key="user-b")
        assert provider.query_cache_misses == misses + 1, "another user's entry was used"
        assert await provider.embed_query("per user " + QUERIES[0], cache_key="user-a") is a
        np.testing.assert_allclose(a, b, atol=1e-6)

    asyncio.run(main())
