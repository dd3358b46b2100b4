"""``/v3/chunks``: list, read, update, delete and search chunks, within what the caller may read.

Readers are the chunk's owner, members of a collection it is in, and superusers; only the owner
or a superuser may change it. A chunk the caller cannot read is a 404 whether or not it exists.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, field_validator

from ragkeep.api.deps import DbDep, Limit, Offset, PrincipalDep, ReadsDep, ServicesDep, require_owner, scope_of
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.params import query_filters
from ragkeep.api.schemas import ChunkOut, ChunkSearchResult, GenericBoolean, PaginatedResults, Results, SearchRequest
from ragkeep.api.searching import ChunkSearchDep
from ragkeep.auth.users import Principal
from ragkeep.db.shared import SharedConnection
from ragkeep.embeddings import EmbeddingError
from ragkeep.ingest import store
from ragkeep.ingest.pipeline import IngestionError
from ragkeep.search import chunks as chunk_listing
from ragkeep.text import json_problem, text_problem

router = APIRouter(prefix="/v3/chunks", tags=["chunks"], route_class=GuardedRoute)

MAX_CHUNK_CHARS = 1_000_000


class ChunkUpdate(BaseModel):
    """R2R's UpdateChunk (``id``, ``text``, ``metadata``); here text and metadata are each optional,
    and ``id``, when sent, must be the chunk's in the path."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("expected non-empty text")
        if len(v) > MAX_CHUNK_CHARS:
            raise ValueError(f"at most {MAX_CHUNK_CHARS} characters")
        if problem := text_problem(v):
            raise ValueError(problem)
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and (problem := json_problem(v)):
            raise ValueError(problem)
        return v


async def _visible_chunk(
    db: SharedConnection, principal: Principal, chunk_id: uuid.UUID, *, include_vectors: bool = False
) -> dict[str, Any]:
    scope_sql, scope_params = scope_of(principal).clause("c")
    async with db.connection() as conn:
        row = await store.get_chunk(conn, chunk_id, scope_sql, scope_params, include_vectors=include_vectors)
    if row is None:
        raise ApiError(404, f"chunk {chunk_id} not found")
    return row


async def _owned_chunk(db: SharedConnection, principal: Principal, chunk_id: uuid.UUID, action: str) -> dict[str, Any]:
    row = await _visible_chunk(db, principal, chunk_id)
    require_owner(principal, row["owner_id"], "chunk", action)
    return row


@router.post("/search", response_model=Results[list[ChunkSearchResult]])
async def search(body: SearchRequest, search_chunks: ChunkSearchDep) -> Results[list[ChunkSearchResult]]:
    """The chunk results of ``/v3/retrieval/search`` for the same body."""
    return Results(results=await search_chunks(body.query, body.settings()))


@router.get("", response_model=PaginatedResults[list[ChunkOut]])
async def list_chunks(
    principal: PrincipalDep,
    reads: ReadsDep,
    offset: Offset = 0,
    limit: Limit = 100,
    include_vectors: bool = False,
    filters: Annotated[str | None, Query(description="filters (JSON), as in search_settings.filters")] = None,
    metadata_filter: Annotated[str | None, Query(description="more filters (JSON), ANDed with 'filters'")] = None,
) -> PaginatedResults[list[ChunkOut]]:
    """Chunks the caller may read, by owner, document and position; ``total_entries`` counts all matches."""
    compiled = query_filters({"filters": filters, "metadata_filter": metadata_filter})
    async with reads.connection() as conn:
        rows, total = await chunk_listing.list_chunks(
            conn, scope_of(principal), compiled, limit=limit, offset=offset, include_vectors=include_vectors
        )
    return PaginatedResults(results=[ChunkOut.from_row(r) for r in rows], total_entries=total)


@router.get("/{chunk_id}", response_model=Results[ChunkOut])
async def retrieve_chunk(
    chunk_id: uuid.UUID, principal: PrincipalDep, db: DbDep, include_vectors: bool = False
) -> Results[ChunkOut]:
    row = await _visible_chunk(db, principal, chunk_id, include_vectors=include_vectors)
    return Results(results=ChunkOut.from_row(row))


@router.post("/{chunk_id}", response_model=Results[ChunkOut])
async def update_chunk(
    chunk_id: uuid.UUID, body: ChunkUpdate, principal: PrincipalDep, services: ServicesDep, db: DbDep
) -> Results[ChunkOut]:
    """New text is embedded again (and its full-text index follows); new metadata replaces the chunk's."""
    if body.id is not None and body.id != chunk_id:
        raise ApiError(422, f"id: {body.id} is not the chunk in the path ({chunk_id})")
    if body.text is None and body.metadata is None:
        raise ApiError(422, "give 'text', 'metadata' or both to update the chunk")
    row = await _owned_chunk(db, principal, chunk_id, "change")
    try:
        async with db.connection() as conn:
            updated = await services.ingestor.update_chunk(
                conn, row["owner_id"], chunk_id, text=body.text, metadata=body.metadata
            )
    except IngestionError as e:
        raise ApiError(422, str(e)) from None
    except EmbeddingError as e:
        raise ApiError(503, f"could not embed the new text: {e}") from None
    if updated is None:  # deleted meanwhile
        raise ApiError(404, f"chunk {chunk_id} not found")
    return Results(results=ChunkOut.from_row(updated))


@router.delete("/{chunk_id}", response_model=Results[GenericBoolean])
async def delete_chunk(chunk_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> Results[GenericBoolean]:
    """Delete one chunk; its document stays, with one chunk fewer."""
    row = await _owned_chunk(db, principal, chunk_id, "delete")
    async with db.connection() as conn:
        deleted = await store.delete_chunk(conn, row["owner_id"], chunk_id)
    if not deleted:
        raise ApiError(404, f"chunk {chunk_id} not found")
    return Results(results=GenericBoolean(success=True))
