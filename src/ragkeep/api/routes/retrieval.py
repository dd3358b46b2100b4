"""``POST /v3/retrieval/search``: semantic, full-text or hybrid search within what the caller may read."""

from __future__ import annotations

from fastapi import APIRouter

from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import AggregateSearchResult, Results, SearchRequest
from ragkeep.api.searching import ChunkSearchDep

router = APIRouter(prefix="/v3/retrieval", tags=["retrieval"], route_class=GuardedRoute)


@router.post("/search", response_model=Results[AggregateSearchResult])
async def search(body: SearchRequest, search_chunks: ChunkSearchDep) -> Results[AggregateSearchResult]:
    results = await search_chunks(body.query, body.settings())
    return Results(results=AggregateSearchResult(chunk_search_results=results, graph_search_results=[]))
