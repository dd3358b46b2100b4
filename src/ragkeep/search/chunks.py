"""Listing chunks by filter: the caller's scope AND the compiled filters, in a stable order."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from ragkeep.db.paging import fetch_page
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
    cols = sql.SQL("{}, c.embedding").format(CHUNK_COLUMNS) if include_vectors else CHUNK_COLUMNS
    return await fetch_page(
        conn,
        columns=cols,
        from_=sql.SQL("chunks c"),
        where=sql.SQL(" AND ").join(where),
        order_by=sql.SQL("c.owner_id, c.document_id, c.chunk_order, c.id"),
        params=params,
        limit=limit,
        offset=offset,
    )
