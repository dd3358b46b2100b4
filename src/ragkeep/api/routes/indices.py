"""``/v3/indices``: the vector indexes that exist (superuser only). Creation, warming and advice
arrive with the index-lifecycle issue."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ragkeep.api.deps import Limit, Offset, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import PaginatedResults
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
