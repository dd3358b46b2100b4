"""The chunk search of one request, as a dependency: the caller's scope, the request's connection,
the process's embedder and search recorder, bound once for the routes that search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from ragkeep.api.deps import PrincipalDep, ReadsDep, ServicesDep, scope_of
from ragkeep.api.schemas import ChunkSearchResult
from ragkeep.api.services import Services
from ragkeep.auth.users import Principal
from ragkeep.db.reads import Connects
from ragkeep.search.chunk_search import search_chunks
from ragkeep.search.settings import SearchSettings


@dataclass(frozen=True)
class ChunkSearch:
    services: Services
    principal: Principal
    #: The request's reads: a standby showing the caller's writes, or the primary (db/reads.py).
    reads: Connects

    async def __call__(self, query: str, settings: SearchSettings) -> list[ChunkSearchResult]:
        """Chunks the caller may read, ranked; InvalidSearch or FilterError (422) for bad settings."""
        rows = await search_chunks(
            self.reads.connection,
            self.services.embedder,
            query,
            settings,
            scope_of(self.principal),
            user_id=self.principal.id,
            config=self.services.settings.search,
            recorder=self.services.searches,
            planner=self.services.planner,
        )
        return [ChunkSearchResult(**r) for r in rows]


async def chunk_search(principal: PrincipalDep, services: ServicesDep, reads: ReadsDep) -> ChunkSearch:
    return ChunkSearch(services, principal, reads)


ChunkSearchDep = Annotated[ChunkSearch, Depends(chunk_search)]
