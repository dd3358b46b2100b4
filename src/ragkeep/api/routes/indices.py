"""``/v3/indices``: list, create, inspect and drop vector indexes (superuser only). Warming,
progress and advice arrive with the rest of the index-lifecycle issue."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ragkeep.api.deps import Limit, Offset, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import GenericMessage, PaginatedResults, Results
from ragkeep.indices.build import IndexSpec, IndexSpecError, Measure, Method, drop_index
from ragkeep.indices.catalog import list_vector_indexes

router = APIRouter(prefix="/v3/indices", tags=["indices"])

#: R2R's SDK and the operations guide call the chunks table "vectors".
TABLE_ALIASES = {"vectors": "chunks", "chunks": "chunks"}


class IndexOut(BaseModel):
    index: dict[str, Any]


class IndicesOut(BaseModel):
    indices: list[IndexOut]


def resolve_table(name: str) -> str:
    try:
        return TABLE_ALIASES[name]
    except KeyError:
        raise ApiError(422, f"table_name: unknown table {name!r}; use 'vectors' (alias 'chunks')") from None


@router.get("", response_model=PaginatedResults[IndicesOut])
async def list_indices(
    _: SuperuserDep,
    services: ServicesDep,
    offset: Offset = 0,
    limit: Limit = 100,
    filters: Annotated[str | None, Query(description='JSON, e.g. {"table_name": "vectors"}')] = None,
) -> PaginatedResults[IndicesOut]:
    table = None
    if filters:
        try:
            parsed = json.loads(filters)
        except json.JSONDecodeError as e:
            raise ApiError(422, f"filters: not valid JSON ({e.msg})") from None
        if not isinstance(parsed, dict) or set(parsed) - {"table_name"}:
            raise ApiError(422, "filters: only {\"table_name\": ...} is supported")
        if "table_name" in parsed:
            table = resolve_table(str(parsed["table_name"]))
    async with services.db.pool.connection() as conn:
        rows, total = await list_vector_indexes(conn, table=table, limit=limit, offset=offset)
    return PaginatedResults(results=IndicesOut(indices=[IndexOut(index=r) for r in rows]), total_entries=total)


class IndexConfigIn(BaseModel):
    """R2R's ``IndexConfig`` (``index_name`` or R2R's older ``name``)."""

    model_config = ConfigDict(extra="ignore")

    table_name: str = "vectors"
    index_method: Method | Literal["auto"] = "hnsw"
    index_measure: Measure = "cosine_distance"
    index_arguments: dict[str, int] | None = None
    index_name: str | None = None
    name: str | None = None
    index_column: str | None = None
    concurrently: bool = True


class IndexCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    config: IndexConfigIn = Field(default_factory=IndexConfigIn)


async def _one(services: ServicesDep, table: str, name: str) -> dict[str, Any]:
    async with services.db.pool.connection() as conn:
        rows, _ = await list_vector_indexes(conn, table=resolve_table(table), name=name, limit=1)
    if not rows:
        raise ApiError(404, f"no vector index {name!r} on table {table!r}")
    return rows[0]


@router.post("", response_model=Results[GenericMessage], status_code=202)
async def create_index(body: IndexCreate, _: SuperuserDep, services: ServicesDep) -> Results[GenericMessage]:
    c = body.config
    method = "hnsw" if c.index_method == "auto" else c.index_method
    try:
        spec = IndexSpec(
            method=method,
            measure=c.index_measure,
            table=resolve_table(c.table_name),
            column=c.index_column or "embedding",
            name=c.index_name or c.name,
            arguments=dict(c.index_arguments or {}),
            concurrently=c.concurrently,
        ).validated()
    except IndexSpecError as e:
        raise ApiError(422, str(e)) from None
    async with services.db.pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (spec.name,))
        if await cur.fetchone():
            raise ApiError(409, f"index_name: a relation named {spec.name!r} already exists")
    await services.indexes.start(spec)
    return Results(results=GenericMessage(message=f"Index {spec.name} is being built; GET /v3/indices shows its status."))


@router.get("/{table_name}/{index_name}", response_model=Results[IndexOut])
async def get_index(table_name: str, index_name: str, _: SuperuserDep, services: ServicesDep) -> Results[IndexOut]:
    return Results(results=IndexOut(index=await _one(services, table_name, index_name)))


@router.delete("/{table_name}/{index_name}", response_model=Results[GenericMessage])
async def delete_index(table_name: str, index_name: str, _: SuperuserDep, services: ServicesDep) -> Results[GenericMessage]:
    """R2R answers a message here, not ``{success}``; so do we."""
    await _one(services, table_name, index_name)  # only vector indexes of known tables may be dropped
    await drop_index(services.db.url, index_name)
    return Results(results=GenericMessage(message=f"Index {index_name} dropped."))
