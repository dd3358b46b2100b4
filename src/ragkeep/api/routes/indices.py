"""``/v3/indices``: list, create (optionally one owner's partial index), inspect, warm and drop
vector indexes (superuser only). Each index carries its build progress, what this process knows
of its build and warm-up, and its share in shared buffers."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ragkeep.api.deps import DbDep, Limit, Offset, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import GenericMessage, PaginatedResults, Results
from ragkeep.db.shared import SharedConnection
from ragkeep.indices.advice import advise
from ragkeep.indices.build import IndexSpec, IndexSpecError, Measure, Method
from ragkeep.indices.catalog import has_extension, list_vector_indexes
from ragkeep.indices.isolation import DEFAULT_TRANSFER_MODE, TransferMode, isolate_tenant
from ragkeep.indices.tenant import owner_from_filters
from ragkeep.monitoring.traffic import search_traffic
from ragkeep.text import JsonError, parse_json

router = APIRouter(prefix="/v3/indices", tags=["indices"], route_class=GuardedRoute)

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
    services: ServicesDep, db: DbDep,
    offset: Offset = 0,
    limit: Limit = 100,
    filters: Annotated[str | None, Query(description='JSON, e.g. {"table_name": "vectors"}')] = None,
) -> PaginatedResults[IndicesOut]:
    table = None
    if filters:
        try:
            parsed = parse_json(filters)
        except JsonError as e:
            raise ApiError(422, f"filters: {e}") from None
        if not isinstance(parsed, dict) or set(parsed) - {"table_name"}:
            raise ApiError(422, "filters: only {\"table_name\": ...} is supported")
        if "table_name" in parsed:
            table = resolve_table(str(parsed["table_name"]))
    async with db.connection() as conn:
        rows, total = await list_vector_indexes(conn, table=table, limit=limit, offset=offset)
    return PaginatedResults(
        results=IndicesOut(indices=[IndexOut(index=_with_state(services, r)) for r in rows]), total_entries=total
    )


def _with_state(services: ServicesDep, row: dict[str, Any]) -> dict[str, Any]:
    """Add ``build`` and ``warm``: what this process knows of the index (null otherwise)."""
    return {**row, **services.indexes.describe(row["name"])}


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
    #: One owner: build a partial index over that owner's rows (tenant promotion).
    filters: Any = None


class IndexCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    config: IndexConfigIn = Field(default_factory=IndexConfigIn)
    filters: Any = None


class IndexCreated(BaseModel):
    """R2R's message, plus the name and the build plan (memory estimate, settings, warning)."""

    message: str
    index_name: str
    owner_id: str | None = None
    build: dict[str, Any]


async def _one(services: ServicesDep, db: SharedConnection, table: str, name: str) -> dict[str, Any]:
    async with db.connection() as conn:
        rows, _ = await list_vector_indexes(conn, table=resolve_table(table), name=name, limit=1)
    if not rows:
        raise ApiError(404, f"no vector index {name!r} on table {table!r}")
    return _with_state(services, rows[0])


@router.post("", response_model=Results[IndexCreated], status_code=202)
async def create_index(body: IndexCreate, _: SuperuserDep, services: ServicesDep, db: DbDep) -> Results[IndexCreated]:
    c = body.config
    method = "hnsw" if c.index_method == "auto" else c.index_method
    if body.filters is not None and c.filters is not None and body.filters != c.filters:
        raise ApiError(422, "filters: given both at the top level and in config, differently; give it once")
    try:
        owner = owner_from_filters(body.filters if body.filters is not None else c.filters)
        spec = IndexSpec(
            method=method,
            measure=c.index_measure,
            table=resolve_table(c.table_name),
            column=c.index_column or "embedding",
            name=c.index_name or c.name,
            arguments=dict(c.index_arguments or {}),
            concurrently=c.concurrently,
            owner_id=owner,
        ).validated()
    except IndexSpecError as e:
        raise ApiError(422, str(e)) from None
    async with db.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (spec.name,))
        if await cur.fetchone():
            raise ApiError(409, f"index_name: a relation named {spec.name!r} already exists")
        if owner is not None:
            cur = await conn.execute("SELECT 1 FROM users WHERE id = %s", (owner,))
            if await cur.fetchone() is None:
                raise ApiError(404, f"filters: no user with id {owner}")
    await db.release()
    record = await services.indexes.start(spec)
    message = f"Index {spec.name} is being built; GET /v3/indices shows its status."
    if record.plan.warning:
        message += f" Warning: {record.plan.warning}"
    return Results(
        results=IndexCreated(
            message=message,
            index_name=spec.name,  # type: ignore[arg-type]
            owner_id=str(owner) if owner else None,
            build=record.as_dict(),
        )
    )


@router.get("/advice", response_model=Results[dict[str, Any]])
async def advice(_: SuperuserDep, services: ServicesDep, db: DbDep) -> Results[dict[str, Any]]:
    """Do you need vector indexes? From live vector counts and the last 7 days of searches."""
    await db.release()
    await services.searches.flush()  # include this replica's latest searches (over a connection of its own)
    async with db.connection() as conn:
        traffic = await search_traffic(conn)
        return Results(results=await advise(conn, services.settings, services.embedder.dimension, traffic))


class IsolateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: A Citus worker as ``host:port`` (as in pg_dist_node) to move the user's shard to.
    node: str | None = None
    #: Citus's shard_transfer_mode for the split and the move (see ragkeep.indices.isolation).
    transfer_mode: TransferMode = DEFAULT_TRANSFER_MODE


@router.post("/tenants/{user_id}/isolate", response_model=Results[dict[str, Any]])
async def isolate(
    user_id: uuid.UUID, _: SuperuserDep, services: ServicesDep, db: DbDep, response: Response,
    body: Annotated[IsolateIn | None, Body()] = None,
) -> Results[dict[str, Any]]:
    """Dedicated capacity for a power user: on Citus their own shard (and optionally node), on a
    single node their own partial HNSW index (202 while it is being built; kept if one exists).
    Answers when the shard is isolated and moved: copying the user's rows takes its time."""
    await db.release()  # the split and the move run on a connection of their own (autocommit)
    async with await psycopg.AsyncConnection.connect(services.indexes.url, autocommit=True) as conn:
        body = body or IsolateIn()
        result = await isolate_tenant(conn, user_id, node=body.node, builder=services.indexes,
                                      transfer_mode=body.transfer_mode)
    if result["build"] is not None:
        response.status_code = 202
    return Results(results=result)


@router.post("/{table_name}/{index_name}/warm", response_model=Results[IndexOut])
async def warm_index(
    table_name: str, index_name: str, _: SuperuserDep, services: ServicesDep, db: DbDep
) -> Results[IndexOut]:
    """Load the index into shared buffers now (pg_prewarm); answers when it is warm."""
    row = await _one(services, db, table_name, index_name)
    if row["status"] != "valid":
        raise ApiError(409, f"index {index_name!r} is {row['status']}, not valid; only a valid index can be warmed")
    async with db.connection() as conn:
        if not await has_extension(conn, "pg_prewarm"):
            raise ApiError(
                503, "the pg_prewarm extension is not installed in this database; CREATE EXTENSION pg_prewarm"
            )
    await db.release()  # warming takes its own connection, for as long as the index takes to load
    state = await services.indexes.warmer.warm(index_name)
    if state.state == "failed":
        raise ApiError(500, f"warming {index_name} failed: {state.error}")
    return Results(results=IndexOut(index=await _one(services, db, table_name, index_name)))


@router.get("/{table_name}/{index_name}", response_model=Results[IndexOut])
async def get_index(
    table_name: str, index_name: str, _: SuperuserDep, services: ServicesDep, db: DbDep
) -> Results[IndexOut]:
    return Results(results=IndexOut(index=await _one(services, db, table_name, index_name)))


@router.delete("/{table_name}/{index_name}", response_model=Results[GenericMessage])
async def delete_index(
    table_name: str, index_name: str, _: SuperuserDep, services: ServicesDep, db: DbDep
) -> Results[GenericMessage]:
    """R2R answers a message here, not ``{success}``; so do we."""
    await _one(services, db, table_name, index_name)  # only vector indexes of known tables may be dropped
    await db.release()  # the drop (CONCURRENTLY) runs on its own connection and may wait
    await services.indexes.drop(index_name)  # and this app's planner forgets it
    services.indexes.forget(index_name)
    return Results(results=GenericMessage(message=f"Index {index_name} dropped."))
