"""``POST /v3/retrieval/search``: semantic search within what the caller may read."""

from __future__ import annotations

from fastapi import APIRouter

from ragkeep.api.deps import PrincipalDep, ServicesDep
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import AggregateSearchResult, ChunkSearchResult, Results, SearchRequest
from ragkeep.search.filters import FilterError, compile_filters
from ragkeep.search.semantic import Scope, semantic_search

router = APIRouter(prefix="/v3/retrieval", tags=["retrieval"])


@router.post("/search", response_model=Results[AggregateSearchResult])
async def search(body: SearchRequest, principal: PrincipalDep, services: ServicesDep) -> Results[AggregateSearchResult]:
    settings = body.search_settings
    try:
        filters = compile_filters(settings.filters)
    except FilterError as e:
        raise ApiError(422, str(e), path=e.path) from None
    if settings.use_fulltext_search or settings.use_hybrid_search or not settings.use_semantic_search:
        raise ApiError(422, "search_settings: only semantic search is available in this version")
    vector = await services.embedder.embed_query(body.query)
    async with services.db.pool.connection() as conn:
        rows = await semantic_search(
            conn,
            Scope.for_principal(principal),
            vector,
            filters,
            limit=settings.limit,
            offset=settings.offset,
        )
    results = [
        ChunkSearchResult(
            id=r["id"],
            document_id=r["document_id"],
            owner_id=r["owner_id"],
            collection_ids=r["collection_ids"],
            score=float(r["score"]) if settings.include_scores else None,
            text=r["text"],
            metadata=r["metadata"] if settings.include_metadatas else {},
        )
        for r in rows
    ]
    return Results(results=AggregateSearchResult(chunk_search_results=results, graph_search_results=[]))
