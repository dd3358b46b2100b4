"""The contract every embedding backend meets, so ingestion and search never care which one runs."""

from __future__ import annotations

import abc
import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer


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

    Query vectors are kept in a small LRU cache (``query_cache_size`` entries, 0 = off): the
    same question asked again, by a user paging through results or by a dashboard, skips the
    model. A query vector depends on its text alone, so the cache is shared by every tenant
    without revealing anything (a cached vector is what any caller would compute).
    """

    model_name: str
    dimension: int
    #: The model's window: longer inputs are truncated (local model) or rejected (remote server),
    #: so chunkers stay below it, counting with :meth:`tokenizer`.
    max_tokens: int
    busy_seconds: float

    def __init__(self, model_name: str, dimension: int, max_tokens: int, query_cache_size: int = 1024) -> None:
        if query_cache_size < 0:
            raise EmbeddingError(f"query_cache_size must be >= 0 (got {query_cache_size})")
        self.model_name = model_name
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.busy_seconds = 0.0
        self._busy_lock = threading.Lock()
        self.query_cache_size = query_cache_size
        self.query_cache_hits = 0
        self.query_cache_misses = 0
        self._query_cache: OrderedDict[tuple[object, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model can embed now (readiness checks it); a remote one is always assumed so."""
        return True

    @abc.abstractmethod
    def tokenizer(self) -> Tokenizer:
        """An untruncated tokenizer that counts tokens as the model does (or as near as is known),
        for chunkers to keep every chunk within :attr:`max_tokens`."""

    @abc.abstractmethod
    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Shape ``(len(texts), dimension)``, float32, unit rows; blocks the calling thread."""

    async def embed(self, texts: list[str], token_ids: list[list[int]] | None = None) -> np.ndarray:
        """Like :meth:`embed_sync`, without blocking the event loop.

        ``token_ids``, when given, are ``tokenizer().encode(text).ids`` of each text, computed
        already by the chunker; a local model uses them instead of tokenising again, a remote
        one ignores them.
        """
        return await asyncio.to_thread(self.embed_sync, check_texts(texts))

    async def embed_query(self, text: str, cache_key: object = None) -> np.ndarray:
        """One 1-D vector, the shape search code wants for a query; read-only, as it may be cached.

        Entries are cached per ``cache_key`` (e.g. the user's id; None = one shared space).
        """
        key = (cache_key, text)
        if self.query_cache_size:
            with self._cache_lock:
                cached = self._query_cache.get(key)
                if cached is not None:
                    self._query_cache.move_to_end(key)
                    self.query_cache_hits += 1
                    return cached
        vector = await self._embed_query(text)
        vector.setflags(write=False)
        if self.query_cache_size:
            with self._cache_lock:
                self.query_cache_misses += 1
                self._query_cache[key] = vector
                self._query_cache.move_to_end(key)
                while len(self._query_cache) > self.query_cache_size:
                    self._query_cache.popitem(last=False)
        return vector

    async def _embed_query(self, text: str) -> np.ndarray:
        """The uncached query path; a local model overrides it to let queries pass ingestion."""
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
