"""Listing chunks by filter: the caller's scope AND the compiled filters, in a stable order."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ragkeep.search.filters import CompiledFilter
from ragkeep.search.scope import Scope

CHUNK_COLUMNS = sql.SQL("c.id, c.document_id, c.owner_id, c.collection_ids, c.text, c.metadata")


async def list_chunks(
    conn: psycopg.AsyncConnection,
    scope: Scope,
    filters: CompiledFilter,
    *,
    limit: int,
    offset: int,
    include_vectors: bool = False,
    document: tuple[uuid.UUID, uuid.UUID] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Chunks in scope matching ``filters`` (optionally of one ``(owner_id, document_id)``) and their total.

    The order (owner, document, position) is the primary-key-like btree's, so pages never overlap
    and a single owner's listing is read from the index in order.
    """
    scope_sql, params = scope.clause("c")
    where = [scope_sql, filters.clause]
    params = {**params, **filters.params}
    if document is not None:
        where.append(sql.SQL("c.owner_id = %(doc_owner)s AND c.document_id = %(doc_id)s"))
        params.update(doc_owner=document[0], doc_id=document[1])
    cond = sql.SQL(" AND ").join(where)
    cols = sql.SQL("{}, c.embedding").format(CHUNK_COLUMNS) if include_vectors else CHUNK_COLUMNS
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {cols}, count(*) OVER () AS total FROM chunks c WHERE {cond} "
                "ORDER BY c.owner_id, c.document_id, c.chunk_order, c.id LIMIT %(limit)s OFFSET %(offset)s"
            ).format(cols=cols, cond=cond),
            {**params, "limit": limit, "offset": offset},
        )
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0]["total"])
        else:  # past the last page the window count is gone: count separately
            await cur.execute(sql.SQL("SELECT count(*) AS total FROM chunks c WHERE {}").format(cond), params)
            total = int((await cur.fetchone() or {"total": 0})["total"])
    for r in rows:
        del r["total"]
    return rows, total
