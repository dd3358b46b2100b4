"""Ingestion of one document: parse, chunk, embed, store; all-or-nothing, with a readable status.

The document row is claimed first (status ``pending``) so that duplicates are refused before any
work, and so that status is visible while a large file is processed in the background. Chunks
and the ``success`` status are written in one transaction; any failure leaves no chunk and the
status ``failed`` with the error.

Chunks are cut in tokens of the embedding model's own tokenizer and never exceed its window, so
the text stored for a chunk is exactly the text its vector was computed from (a model silently
drops what does not fit). Chunks given ready-made without vectors are held to the same window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import AsyncConnectionPool

from ragkeep.config import IngestionConfig, LimitsConfig
from ragkeep.db.reads import record_write
from ragkeep.embeddings import EmbeddingProvider
from ragkeep.errors import LimitExceeded, Unavailable
from ragkeep.ingest import liveness, store
from ragkeep.ingest.chunking import TokenChunker
from ragkeep.ingest.isolation import ParserPool
from ragkeep.ingest.liveness import IngestLease
from ragkeep.ingest.parsers import DocumentParseError, ParseLimits, UnsupportedDocumentType

log = logging.getLogger(__name__)


class IngestionError(Exception):
    """The document could not be ingested; the message is safe to show the user."""


@dataclass(frozen=True)
class FileSource:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class TextSource:
    text: str


@dataclass(frozen=True)
class ChunkInput:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: list[float] | None = None


@dataclass(frozen=True)
class ChunksSource:
    chunks: list[ChunkInput]


Source = FileSource | TextSource | ChunksSource


@dataclass(frozen=True)
class Upload:
    owner_id: uuid.UUID
    document_id: uuid.UUID
    source: Source
    document_type: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    collection_ids: tuple[uuid.UUID, ...] = ()
    #: This try at ingesting the document: writes of an attempt that was swept touch nothing.
    attempt: uuid.UUID = field(default_factory=uuid.uuid4)
    #: The storage quotas the claim and the chunk write hold the owner to; None: unlimited (tools
    #: and benchmarks that ingest below the API).
    limits: LimitsConfig | None = None

    @property
    def size_in_bytes(self) -> int:
        s = self.source
        if isinstance(s, FileSource):
            return len(s.data)
        if isinstance(s, TextSource):
            return len(s.text.encode())
        return sum(len(c.text.encode()) for c in s.chunks)

    @property
    def content_hash(self) -> str:
        s = self.source
        h = hashlib.sha256()
        if isinstance(s, FileSource):
            h.update(s.data)
        elif isinstance(s, TextSource):
            h.update(s.text.encode())
        else:
            h.update(json.dumps([c.text for c in s.chunks]).encode())
        return h.hexdigest()


class Ingestor:
    """Owns the steps and their order; the API decides whether to await it or run it in the background."""

    def __init__(self, pool: AsyncConnectionPool, embedder: EmbeddingProvider, config: IngestionConfig) -> None:
        self.pool = pool
        self.embedder = embedder
        self.config = config
        # Raises ConfigError at start for a chunk_size the model cannot read whole.
        self.chunker = TokenChunker(
            embedder.tokenizer(), config.chunk_tokens(embedder.max_tokens), config.chunk_overlap
        )
        self._background: set[asyncio.Task[None]] = set()
        #: Cumulative wall seconds per step (parse, chunk, embed, store) across all documents.
        self.step_seconds: dict[str, float] = defaultdict(float)
        #: This replica's liveness (see liveness.py); None until :meth:`start` (rows then carry no
        #: lease and are swept only after 15 minutes without progress).
        self.lease: IngestLease | None = None
        self._in_flight: set[uuid.UUID] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: With read replicas (db/reads.py): record the owner's write position when a background
        #: ingestion ends, so their next read waits for a standby that has its outcome.
        self.record_writes = False
        self.parsers = ParserPool(
            config.parse_workers,
            config.parse_timeout_seconds,
            config.parse_memory_mb,
            ParseLimits(
                max_decompressed_bytes=config.max_decompressed_bytes,
                max_elements=config.max_elements,
                max_pages=config.max_pages,
            ),
        )

    async def start(self, url: str) -> None:
        """Take this replica's lease and sweep, now and every ``sweep_seconds``, the documents
        in flight whose replica is gone."""
        self.lease = IngestLease(url)
        await self.lease.acquire()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="ingestion sweeper")

    async def sweep(self) -> int:
        """Check this replica's lease, then fail the documents of dead replicas."""
        if self.lease is not None:
            await self.lease.ensure(self._in_flight)
        async with self.pool.connection() as conn:
            swept = await liveness.sweep(conn)
        if swept:
            log.warning("marked %d interrupted ingestions (their server process is gone) as failed", swept)
        return swept

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as e:  # the database may be restarting; the next round retries
                log.warning("the ingestion sweep failed (%s); retrying in %.0f s", e, self.config.sweep_seconds)
            await asyncio.sleep(self.config.sweep_seconds)

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.step_seconds[name] += time.perf_counter() - start

    def validate(self, upload: Upload) -> None:
        """Checks that need no database, run before anything is written."""
        if isinstance(upload.source, ChunksSource) and self._given_vectors(upload.source.chunks) is None:
            self._check_window([c.text for c in upload.source.chunks])

    def _check_window(self, texts: list[str]) -> None:
        """Ready-made chunks that the model would truncate are refused, not silently cut."""
        window = self.embedder.max_tokens
        for i, n in enumerate(self.chunker.count(texts)):
            if n > window:
                raise IngestionError(
                    f"chunks[{i}] is {n} tokens long and the embedding model reads at most {window} "
                    f"({self.embedder.model_name}); split it, send the text as a file or raw_text to have "
                    "ragkeep chunk it, or send the chunk with its embedding"
                )

    async def update_chunk(
        self,
        conn: psycopg.AsyncConnection,
        owner_id: uuid.UUID,
        chunk_id: uuid.UUID,
        *,
        text: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Change one stored chunk: new text is embedded again (its full-text index follows), new
        metadata replaces the chunk's. None if the chunk is gone. IngestionError for text past the
        model's window (the model would silently cut it); EmbeddingError when embedding fails."""
        embedding = None
        if text is not None:
            tokens, window = self.chunker.count([text])[0], self.embedder.max_tokens
            if tokens > window:
                raise IngestionError(f"text: {tokens} tokens, and the embedding model reads at most {window}; "
                                     "shorten it or split it into two chunks")
            embedding = (await self.embedder.embed([text]))[0]
        return await store.update_chunk(conn, owner_id, chunk_id, text=text, metadata=metadata, embedding=embedding)

    async def claim(self, upload: Upload) -> None:
        """Register the document as pending; raises store.DuplicateDocument."""
        async with self.pool.connection() as conn:
            await store.insert_pending(
                conn,
                owner_id=upload.owner_id,
                document_id=upload.document_id,
                collection_ids=upload.collection_ids,
                document_type=upload.document_type,
                title=upload.title,
                metadata=upload.metadata,
                size_in_bytes=upload.size_in_bytes,
                content_hash=upload.content_hash,
                # Ready-made chunks: max_chunks is checked at the claim, before any work.
                chunk_count=len(upload.source.chunks) if isinstance(upload.source, ChunksSource) else None,
                limits_config=upload.limits,
                lease=self.lease.key if self.lease is not None else None,
                attempt=upload.attempt,
            )

    async def process(self, upload: Upload, progress: bool = False) -> int:
        """Run every step after ``claim``; returns the chunk count, or raises IngestionError.

        ``progress`` records each step in the document's status (``parsing``, ``embedding``,
        ``storing``) for background ingestions, whose uploader polls; an upload answered when done
        skips those three writes (a transaction each: CPU the model needs on a small machine, for
        a status nobody polls) and goes from ``pending`` to its outcome.
        """
        self._in_flight.add(upload.attempt)
        try:
            return await self._process(upload, progress)
        except store.ClaimLost as e:  # swept meanwhile: the failure is recorded already
            raise IngestionError(f"{liveness.INTERRUPTED} ({e})") from None
        except asyncio.CancelledError:
            await self._fail(upload, "ingestion was cancelled (the server stopped); upload the document again")
            raise
        except (IngestionError, LimitExceeded, Unavailable) as e:  # refused whole, or the server stops
            await self._fail(upload, str(e))
            raise
        except psycopg.OperationalError as e:  # the database, not the document: a 503 for the uploader
            await self._fail(upload, f"the database was unavailable: {e}")
            raise
        except Exception as e:  # any failure: nothing half-written, and the reason kept
            log.exception("ingestion of document %s failed", upload.document_id)
            await self._fail(upload, f"{type(e).__name__}: {e}")
            raise IngestionError(f"ingestion failed: {e}") from e
        finally:
            self._in_flight.discard(upload.attempt)

    def process_in_background(self, upload: Upload) -> None:
        task = asyncio.create_task(self._process_quietly(upload), name=f"ingest {upload.document_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _process_quietly(self, upload: Upload) -> None:
        try:
            await self.process(upload, progress=True)
        except (IngestionError, LimitExceeded, Unavailable):
            pass  # recorded in the document's status
        except psycopg.OperationalError as e:  # recorded if the database came back in time
            log.warning("background ingestion of document %s stopped: database unavailable (%s)", upload.document_id, e)
            return
        if self.record_writes:
            try:
                async with self.pool.connection() as conn:
                    await record_write(conn, upload.owner_id)
            except psycopg.Error as e:  # the outcome is stored; a standby may show it a moment late
                log.warning("could not record the write position of document %s: %s", upload.document_id, e)

    async def drain(self, grace_seconds: float = 0.0) -> None:
        """At shutdown: give background uploads up to ``grace_seconds`` to finish, cancel the rest
        (each records its failure: "upload again"), then let the lease go.

        The sweeper and the lease stay up during the grace, so no other replica fails these
        documents while they are still being finished here."""
        if self._background and grace_seconds > 0:
            log.info("waiting up to %.0f s for %d background ingestions", grace_seconds, len(self._background))
            await asyncio.wait(set(self._background), timeout=grace_seconds)
            if self._background:
                log.warning("cancelling %d background ingestions still running after the shutdown grace",
                            len(self._background))
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        try:
            if self.lease is not None:
                await self.lease.close()
        finally:
            await self.parsers.close()  # the workers are processes: killed whatever happened above

    async def _status(self, upload: Upload, status: str, **kw: Any) -> None:
        async with self.pool.connection() as conn:
            current = await store.set_status(
                conn, upload.owner_id, upload.document_id, status, attempt=upload.attempt, **kw
            )
        if not current and status != "failed":
            raise store.ClaimLost(f"document {upload.document_id} is no longer being ingested by this attempt")

    async def _fail(self, upload: Upload, error: str) -> None:
        try:
            await asyncio.shield(self._status(upload, "failed", error=error[:2000]))
        except Exception:
            log.exception("could not record the failure of document %s", upload.document_id)

    async def _process(self, upload: Upload, progress: bool) -> int:
        texts, metadatas, vectors, token_ids = await self._texts(upload, progress)
        if not texts:
            raise IngestionError("the document produced no chunks of text")
        if vectors is None:
            if progress:
                await self._status(upload, "embedding")
            with self._step("embed"):
                vectors = await self.embedder.embed(texts, token_ids)
        if progress:
            await self._status(upload, "storing")
        with self._step("store"):
            async with self.pool.connection() as conn:
                await store.store_chunks(
                    conn,
                    owner_id=upload.owner_id,
                    document_id=upload.document_id,
                    collection_ids=upload.collection_ids,
                    texts=texts,
                    metadatas=metadatas,
                    embeddings=vectors,
                    limits_config=upload.limits,
                    attempt=upload.attempt,
                )
        return len(texts)

    async def _texts(
        self, upload: Upload, progress: bool
    ) -> tuple[list[str], list[dict[str, Any]], np.ndarray | None, list[list[int]] | None]:
        """Chunk texts, their metadata, vectors if given, and the model's token ids if known."""
        src = upload.source
        if isinstance(src, ChunksSource):
            texts = [c.text for c in src.chunks]
            metadatas = [{**upload.metadata, **c.metadata} for c in src.chunks]
            return texts, metadatas, self._given_vectors(src.chunks), None
        if progress:
            await self._status(upload, "parsing")
        if isinstance(src, FileSource):
            try:
                with self._step("parse"):
                    parsed = await self.parsers.parse(src.data, src.filename, src.content_type)
            except (DocumentParseError, UnsupportedDocumentType) as e:
                raise IngestionError(str(e)) from e
            text = parsed.text
            if parsed.title and not upload.title:
                await self._status(upload, "parsing", title=parsed.title)
        else:
            text = src.text.replace("\x00", "")
        with self._step("chunk"):
            texts, token_ids = await asyncio.to_thread(self.chunker.chunks_with_ids, text)
        return texts, [dict(upload.metadata) for _ in texts], None, token_ids

    def _given_vectors(self, chunks: list[ChunkInput]) -> np.ndarray | None:
        given = [c.embedding is not None for c in chunks]
        if not any(given):
            return None
        if not all(given):
            raise IngestionError("either every chunk carries an embedding or none does")
        vectors = np.asarray([c.embedding for c in chunks], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dimension:
            got = vectors.shape[1] if vectors.ndim == 2 else "mixed"
            raise IngestionError(
                f"chunk embeddings must have {self.embedder.dimension} dimensions (the configured model's); got {got}"
            )
        if not np.isfinite(vectors).all():
            raise IngestionError("chunk embeddings must be finite numbers")
        return vectors
