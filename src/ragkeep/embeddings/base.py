"""The contract every embedding backend meets, so ingestion and search never care which one runs."""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


class EmbeddingError(Exception):
    """Raised when texts cannot be embedded; the message says what to do next."""


def check_texts(texts: Sequence[str]) -> list[str]:
    """A bare ``str`` would otherwise be embedded character by character."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string (use embed_query for one text)")
    return list(texts)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows make cosine similarity a plain inner product, which is what pgvector's index scores."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = vectors / np.maximum(norms, np.float32(1e-12))
    return unit


class EmbeddingProvider(abc.ABC):
    """Turns texts into float32 unit vectors of a fixed ``dimension``.

    ``busy_seconds`` adds up the wall time spent inside the model or the remote call, so that a
    benchmark can tell embedding time from everything else an ingestion does.
    """

    model_name: str
    dimension: int
    #: Longer inputs are truncated (local model) or rejected (remote server); chunkers stay below.
    max_tokens: int
    busy_seconds: float

    def __init__(self, model_name: str, dimension: int, max_tokens: int) -> None:
        self.model_name = model_name
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.busy_seconds = 0.0
        self._busy_lock = threading.Lock()

    @abc.abstractmethod
    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Shape ``(len(texts), dimension)``, float32, unit rows; blocks the calling thread."""

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Like :meth:`embed_sync`, without blocking the event loop."""
        return await asyncio.to_thread(self.embed_sync, check_texts(texts))

    async def embed_query(self, text: str) -> np.ndarray:
        """One 1-D vector: the shape search code wants for a query."""
        vector: np.ndarray = (await self.embed([text]))[0]
        return vector

    @abc.abstractmethod
    def close(self) -> None:
        """Release threads, sessions and connections; idempotent, and later calls raise EmbeddingError."""

    async def aclose(self) -> None:
        """:meth:`close` for an event loop's shutdown hook; closing may wait for a running call."""
        await asyncio.to_thread(self.close)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dimension), dtype=np.float32)

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """Locked, because async callers and worker threads may finish calls at the same time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._busy_lock:
                self.busy_seconds += elapsed
