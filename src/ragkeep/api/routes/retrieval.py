"""``POST /v3/retrieval/search``: semantic, full-text or hybrid search within what the caller may read."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from ragkeep.api.deps import PrincipalDep, ServicesDep, scope_of
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import AggregateSearchResult, ChunkSearchResult, Results, SearchRequest, SearchSettings
from ragkeep.search.filters import FilterError, compile_filters
from ragkeep.search.queries import Kind
from ragkeep.search.service import HybridParams, IndexParams, run_search

router = APIRouter(prefix="/v3/retrieval", tags=["retrieval"], route_class=GuardedRoute)


def search_kind(settings: SearchSettings) -> Kind:
    """R2R's precedence: hybrid when asked or when both kinds are on; then full-text; then semantic."""
    if settings.use_hybrid_search or (settings.use_fulltext_search and settings.use_semantic_search):
        return Kind.HYBRID
    if settings.use_fulltext_search:
        return Kind.FULL_TEXT
    if settings.use_semantic_search:
        return Kind.SEMANTIC
    raise ApiError(422, "search_settings: at least one of use_semantic_search or use_fulltext_search must be true")


def result_out(row: dict[str, Any], settings: SearchSettings) -> ChunkSearchResult:
    metadata = row["metadata"] if settings.include_metadatas else {}
    if "semantic_rank" in row:
        metadata = {**metadata, "semantic_rank": row["semantic_rank"], "full_text_rank": row["full_text_rank"]}
    return ChunkSearchResult(
        id=row["id"],
        document_id=row["document_id"],
        owner_id=row["owner_id"],
        collection_ids=row["collection_ids"],
        score=float(row["score"]) if settings.include_scores else None,
        text=row["text"],
        metadata=metadata,
    )


async def search_chunks(body: SearchRequest, principal: PrincipalDep, services: ServicesDep) -> list[ChunkSearchResult]:
    settings = SearchSettings.for_mode(body.search_mode, body.search_settings)
    kind = search_kind(settings)
    if not settings.chunk_settings.enabled:
        return []
    try:
        filters = compile_filters(settings.filters)
    except FilterError as e:
        raise ApiError(422, str(e), path=e.path) from None
    started = time.perf_counter()
    # Cached per user: with one shared cache, a faster answer would tell a tenant that someone else
    # searched the same text.
    vector = await services.embedder.embed_query(body.query, principal.id) if kind is not Kind.FULL_TEXT else None
    h, c = settings.hybrid_settings, settings.chunk_settings
    scope = scope_of(principal)
    async with services.db.pool.connection() as conn:
        db_started = time.perf_counter()
        outcome = await run_search(
            conn,
            kind,
            scope,
            filters,
            limit=settings.limit,
            offset=settings.offset,
            query_text=body.query,
            query_vector=vector,
            hybrid=HybridParams(h.full_text_weight, h.semantic_weight, h.full_text_limit, h.rrf_k),
            # R2R's defaults (40, 10) only when the caller set them; else ragkeep's [search] ones.
            index=IndexParams(
                c.ef_search if "ef_search" in c.model_fields_set else None,
                c.probes if "probes" in c.model_fields_set else None,
            ),
            config=services.settings.search,
            planner=services.planner,
        )
        db_ms = (time.perf_counter() - db_started) * 1000
    plan = outcome.plan
    services.searches.record(
        user_id=principal.id,
        kind=kind.value,
        strategy=plan.strategy.value,
        scope_size=plan.scope_size,
        cross_user=plan.owner is None,
        total_ms=(time.perf_counter() - started) * 1000,
        db_ms=db_ms,
        short=plan.strategy.uses_index and (outcome.semantic_found or 0) < settings.limit + settings.offset,
        fallback=plan.fallback,
    )
    rows = outcome.rows
    return [result_out(r, settings) for r in rows]


@router.post("/search", response_model=Results[AggregateSearchResult])
async def search(body: SearchRequest, principal: PrincipalDep, services: ServicesDep) -> Results[AggregateSearchResult]:
    results = await search_chunks(body, principal, services)
    return Results(results=AggregateSearchResult(chunk_search_results=results, graph_search_results=[]))
