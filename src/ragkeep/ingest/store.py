"""The SQL that owns the documents and chunks tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

DOCUMENT_COLUMNS = (
    "d.id, d.owner_id, d.collection_ids, d.document_type, d.title, d.metadata, d.size_in_bytes, "
    "d.content_hash, d.ingestion_status, d.error, d.chunk_count, d.created_at, d.updated_at"
)
TERMINAL_STATUSES = ("success", "failed")


class DuplicateDocument(Exception):
    def __init__(self, existing_id: uuid.UUID, reason: str) -> None:
        super().__init__(reason)
        self.existing_id = existing_id


async def insert_pending(
    conn: psycopg.AsyncConnection,
    *,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    collection_ids: Sequence[uuid.UUID],
    document_type: str,
    title: str | None,
    metadata: dict[str, Any],
    size_in_bytes: int,
    content_hash: str,
) -> None:
    """Claim the id and the content for this owner, or raise DuplicateDocument naming the holder."""
    async with conn.transaction():
        # Serialise claims of one id, which must be unique across owners too (routes take ids alone).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(document_id),))
        cur = await conn.execute(
            "SELECT owner_id, ingestion_status FROM documents WHERE id = %s", (document_id,)
        )
        row = await cur.fetchone()
        if row is not None:
            if row[0] != owner_id or row[1] != "failed":
                raise DuplicateDocument(document_id, f"a document with id {document_id} already exists")
            # A failed attempt with this id is replaced by the new one.
            await conn.execute("DELETE FROM documents WHERE owner_id = %s AND id = %s", (owner_id, document_id))
        cur = await conn.execute(
            """SELECT id FROM documents
               WHERE owner_id = %s AND content_hash = %s AND ingestion_status <> 'failed'""",
            (owner_id, content_hash),
        )
        dup = await cur.fetchone()
        if dup is not None:
            raise DuplicateDocument(dup[0], f"identical content was already uploaded as document {dup[0]}")
        try:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO documents (owner_id, id, collection_ids, document_type, title, metadata,
                                              size_in_bytes, content_hash)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    (owner_id, document_id, list(collection_ids), document_type, title, Jsonb(metadata),
                     size_in_bytes, content_hash),
                )
        except psycopg.errors.UniqueViolation:
            cur = await conn.execute(
                "SELECT id FROM documents WHERE owner_id = %s AND content_hash = %s AND ingestion_status <> 'failed'",
                (owner_id, content_hash),
            )
            dup = await cur.fetchone()
            existing = dup[0] if dup else document_id
            raise DuplicateDocument(existing, f"identical content was already uploaded as document {existing}") from None


async def set_status(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    status: str,
    error: str | None = None,
    *,
    document_type: str | None = None,
    title: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE documents SET ingestion_status = %s, error = %s, updated_at = now(),
                  document_type = coalesce(%s, document_type), title = coalesce(%s, title)
           WHERE owner_id = %s AND id = %s""",
        (status, error, document_type, title, owner_id, document_id),
    )


async def store_chunks(
    conn: psycopg.AsyncConnection,
    *,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    collection_ids: Sequence[uuid.UUID],
    texts: Sequence[str],
    metadatas: Sequence[dict[str, Any]],
    embeddings: np.ndarray,
) -> None:
    """All chunks and the success status in one transaction: a document is searchable whole or not at all."""
    collections = list(collection_ids)
    async with conn.transaction():
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY chunks (owner_id, id, document_id, collection_ids, chunk_order, text, metadata, embedding) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "uuid", "uuid", "uuid[]", "int4", "text", "jsonb", "vector"])
                for order, (text, meta, vec) in enumerate(zip(texts, metadatas, embeddings, strict=True)):
                    await copy.write_row(
                        (owner_id, uuid.uuid4(), document_id, collections, order, text, Jsonb(meta), vec)
                    )
        await conn.execute(
            """UPDATE documents SET ingestion_status = 'success', error = NULL, chunk_count = %s, updated_at = now()
               WHERE owner_id = %s AND id = %s""",
            (len(texts), owner_id, document_id),
        )


async def get_document(conn: psycopg.AsyncConnection, document_id: uuid.UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.id = %s", (document_id,))
        return await cur.fetchone()


async def list_documents(
    conn: psycopg.AsyncConnection,
    scope_clause: sql.Composable,
    scope_params: dict[str, Any],
    *,
    ids: Sequence[uuid.UUID] | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:

    where = [scope_clause]
    params = dict(scope_params)
    if ids:
        where.append(sql.SQL("d.id = ANY(%(ids)s::uuid[])"))
        params["ids"] = list(ids)
    cond = sql.SQL(" AND ").join(where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {cols}, count(*) OVER () AS total FROM documents d WHERE {cond} "
                "ORDER BY d.created_at DESC, d.id LIMIT %(limit)s OFFSET %(offset)s"
            ).format(cols=sql.SQL(DOCUMENT_COLUMNS), cond=cond),
            {**params, "limit": limit, "offset": offset},
        )
        rows = await cur.fetchall()
        if rows:
            total = int(rows[0]["total"])
        else:  # past the last page the window count is gone: count separately
            await cur.execute(sql.SQL("SELECT count(*) AS total FROM documents d WHERE {}").format(cond), params)
            total = int((await cur.fetchone() or {"total": 0})["total"])
    for r in rows:
        del r["total"]
    return rows, total


async def list_chunks(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID, *, limit: int, offset: int,
    include_vectors: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    vec = ", embedding" if include_vectors else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT id, document_id, owner_id, collection_ids, text, metadata, chunk_order{vec}
                FROM chunks WHERE owner_id = %s AND document_id = %s
                ORDER BY chunk_order LIMIT %s OFFSET %s""",
            (owner_id, document_id, limit, offset),
        )
        rows = await cur.fetchall()
        await cur.execute(
            "SELECT chunk_count FROM documents WHERE owner_id = %s AND id = %s", (owner_id, document_id)
        )
        total = await cur.fetchone()
    return rows, int(total["chunk_count"]) if total else 0


async def delete_document(conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM documents WHERE owner_id = %s AND id = %s", (owner_id, document_id))
    return cur.rowcount > 0


async def fail_interrupted(conn: psycopg.AsyncConnection, older_than_minutes: int = 15) -> int:
    """Documents left mid-ingestion by a process that died are failed, so they can be uploaded again."""
    cur = await conn.execute(
        """UPDATE documents SET ingestion_status = 'failed', updated_at = now(),
                  error = 'ingestion was interrupted (the server stopped); upload the document again'
           WHERE ingestion_status NOT IN ('success', 'failed')
             AND updated_at < now() - make_interval(mins => %s)""",
        (older_than_minutes,),
    )
    return cur.rowcount
