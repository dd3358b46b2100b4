"""A chunk search as the API asks for it: R2R's settings translated, the query embedded, the search
run in a transaction of its own, timed, and reported to whoever records searches.

Every route that searches (``/v3/retrieval/search``, ``/v3/chunks/search``, ``/v3/documents/search``)
comes through here; the recorder (the monitoring's ``SearchRecorder``) is passed in, so search
knows nothing of monitoring.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import psycopg

from ragkeep.config import SearchConfig
from ragkeep.embeddings import EmbeddingProvider
from ragkeep.search.filters import compile_filters
from ragkeep.search.planner import Planner
from ragkeep.search.queries import Kind
from ragkeep.search.scope import Scope
from ragkeep.search.service import run_search
from ragkeep.search.settings import (
    SearchSettings,
    hybrid_params,
    index_params,
    result_fields,
    search_kind,
)

#: Where a search takes its connection for one block (``SharedConnection.connection``, or a pool's).
Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]


class SearchRecorder(Protocol):
    """Receives one call per search run (``ragkeep.monitoring.searches.SearchRecorder``)."""

    def record(
        self,
        *,
        user_id: uuid.UUID,
        kind: str,
        strategy: str,
        scope_size: int,
        cross_user: bool,
        total_ms: float,
        db_ms: float,
        short: bool = False,
        fallback: bool = False,
    ) -> None: ...


async def search_chunks(
    connect: Connect,
    embedder: EmbeddingProvider,
    query: str,
    settings: SearchSettings,
    scope: Scope,
    *,
    user_id: uuid.UUID,
    config: SearchConfig,
    recorder: SearchRecorder | None = None,
    planner: Planner,
) -> list[dict[str, Any]]:
    """The ranked chunks ``scope`` may read, as ChunkSearchResult fields (``result_fields``).

    Raises InvalidSearch (no kind of search on) or FilterError (an invalid filter); both are the
    caller's mistake. ``settings`` are final (``SearchSettings.for_mode`` already applied)."""
    kind = search_kind(settings)
    if not settings.chunk_settings.enabled:
        return []
    filters = compile_filters(settings.filters)
    started = time.perf_counter()
    # Cached per user: with one shared cache, a faster answer would tell a tenant that someone else
    # searched the same text.
    vector = await embedder.embed_query(query, user_id) if kind is not Kind.FULL_TEXT else None
    # A transaction of its own: the index settings are SET LOCAL and end with it.
    async with connect() as conn, conn.transaction():
        db_started = time.perf_counter()
        outcome = await run_search(
            conn,
            kind,
            scope,
            filters,
            limit=settings.limit,
            offset=settings.offset,
            query_text=query,
            query_vector=vector,
            hybrid=hybrid_params(settings),
            index=index_params(settings),
            config=config,
            planner=planner,
        )
        db_ms = (time.perf_counter() - db_started) * 1000
    plan = outcome.plan
    if recorder is not None:
        recorder.record(
            user_id=user_id,
            kind=kind.value,
            strategy=plan.strategy.value,
            scope_size=plan.scope_size,
            cross_user=plan.owner is None,
            total_ms=(time.perf_counter() - started) * 1000,
            db_ms=db_ms,
            short=plan.strategy.uses_index and (outcome.semantic_found or 0) < settings.limit + settings.offset,
            fallback=plan.fallback,
        )
    return [result_fields(r, settings) for r in outcome.rows]
