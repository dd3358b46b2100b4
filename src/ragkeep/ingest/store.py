"""The SQL that owns the documents and chunks tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ragkeep.config import LimitsConfig
from ragkeep.db.paging import fetch_page
from ragkeep.errors import Conflict
from ragkeep.ingest import liveness
from ragkeep.limits import storage

DOCUMENT_COLUMNS = (
    "d.id, d.owner_id, d.collection_ids, d.document_type, d.title, d.metadata, d.size_in_bytes, "
    "d.content_hash, d.ingestion_status, d.error, d.chunk_count, d.created_at, d.updated_at"
)
TERMINAL_STATUSES = ("success", "failed")
CHUNK_COLUMNS = "c.id, c.document_id, c.owner_id, c.collection_ids, c.text, c.metadata"
#: The alias a filter for :func:`delete_documents_where` is compiled for (``compile_filters(f, alias=...)``).
DOCUMENT_FILTER_ALIAS = "x"


class DocumentBusy(Conflict):
    """The document is still being ingested; its chunks are not all written yet."""


class DuplicateDocument(Conflict):
    def __init__(self, existing_id: uuid.UUID, reason: str, *, foreign: bool = False) -> None:
        super().__init__(reason)
        self.existing_id = existing_id
        #: The id is another owner's: the message says nothing about that document.
        self.foreign = foreign


class ClaimLost(Exception):
    """This attempt's document was failed by a sweeper (its replica's lease was lost) or replaced."""


#: What a refused id taken by another owner is told: not that it exists, nor whose it is.
FOREIGN_ID = (
    "id {id} cannot be used for a new document; choose another id, or leave 'id' out to have one made"
)


# -- owner_stats ---------------------------------------------------------------------------------
# Kept here, by the statements that add and remove documents and chunks, in their transactions
# (migration 0011 dropped the statement triggers that did it: Citus cannot distribute them). Every
# INSERT into documents adds a document, the COPY of a document's chunks adds them, and every DELETE
# subtracts what it removed; a deleted user's row goes by its foreign key's cascade. The timestamp
# is a parameter: Citus refuses now() in the DO UPDATE of an upsert on a distributed table.
_ADD_OWNER_STATS = """
INSERT INTO owner_stats AS s (owner_id, document_count, chunk_count, updated_at)
VALUES (%(owner)s, %(documents)s, %(chunks)s, %(now)s)
ON CONFLICT (owner_id) DO UPDATE
    SET document_count = s.document_count + excluded.document_count,
        chunk_count = s.chunk_count + excluded.chunk_count, updated_at = excluded.updated_at
"""


async def add_owner_stats(
    conn: psycopg.AsyncConnection, changes: Iterable[tuple[uuid.UUID, int, int]]
) -> None:
    """Add (owner, documents, chunks) deltas to ``owner_stats`` (negative to remove), in the caller's
    transaction. Owners in id order, so two transactions touching the same owners cannot deadlock.

    Public for code that writes rows without this module (test and benchmark loaders)."""
    now = datetime.now(UTC)
    rows = [
        {"owner": owner, "documents": documents, "chunks": chunks, "now": now}
        for owner, documents, chunks in sorted(changes, key=lambda c: c[0])
        if documents or chunks
    ]
    if len(rows) == 1:
        await conn.execute(_ADD_OWNER_STATS, rows[0])
    elif rows:
        async with conn.cursor() as cur:
            await cur.executemany(_ADD_OWNER_STATS, rows)


#: ``owner_stats`` of the owners ``%(owners)s`` counted from the tables, at ``%(now)s``: for
#: loaders that COPY or delete rows past this module (tests, benchmarks). A scan per owner.
#: Counted by owner_id groups joined to users, not by correlated subqueries: on Citus those are
#: refused ("complex joins"); the grouped counts run on the shards.
RECOUNT_OWNER_STATS_SQL = """
INSERT INTO owner_stats AS s (owner_id, document_count, chunk_count, updated_at)
WITH d AS (SELECT owner_id, count(*) AS n FROM documents WHERE owner_id = ANY(%(owners)s::uuid[]) GROUP BY owner_id),
     c AS (SELECT owner_id, count(*) AS n FROM chunks WHERE owner_id = ANY(%(owners)s::uuid[]) GROUP BY owner_id)
SELECT u.id, coalesce(d.n, 0), coalesce(c.n, 0), %(now)s
FROM users u LEFT JOIN d ON d.owner_id = u.id LEFT JOIN c ON c.owner_id = u.id
WHERE u.id = ANY(%(owners)s::uuid[])
ON CONFLICT (owner_id) DO UPDATE
    SET document_count = excluded.document_count, chunk_count = excluded.chunk_count,
        updated_at = excluded.updated_at
"""


def recount_params(owners: Iterable[uuid.UUID]) -> dict[str, Any]:
    """The parameters of :data:`RECOUNT_OWNER_STATS_SQL` (a sync or async connection runs it)."""
    return {"owners": sorted(set(owners)), "now": datetime.now(UTC)}


async def _subtract_deleted(conn: psycopg.AsyncConnection, deleted: Iterable[Sequence[Any]]) -> None:
    """Subtract what a ``DELETE FROM documents ... RETURNING owner_id, chunk_count`` removed (its
    chunks go by the foreign key's cascade; ``documents.chunk_count`` is exact: it is set with the
    COPY of the chunks and decremented with each chunk deleted)."""
    removed: dict[uuid.UUID, list[int]] = {}
    for row in deleted:
        counts = removed.setdefault(row[0], [0, 0])
        counts[0] += 1
        counts[1] += int(row[1])
    await add_owner_stats(conn, [(o, -d, -c) for o, (d, c) in removed.items()])


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
    chunk_count: int | None = None,
    limits_config: LimitsConfig | None = None,
    lease: int | None = None,
    attempt: uuid.UUID | None = None,
) -> None:
    """Claim the id and the content for this owner, or raise DuplicateDocument naming the holder.

    The row records the claiming replica's ``lease`` and this ``attempt``. A document of this
    owner that is still in flight but whose replica is gone (:func:`liveness.fail_dead_claims`) blocks
    neither its id nor its content: it is failed here, and replaced like any failed attempt.

    With limits (``limits_config``: the API passes the configured ones; none: unlimited), the
    owner is locked and the claim is refused (LimitExceeded) when it would pass ``max_documents``,
    or ``max_chunks`` when the chunk count is known already (``chunk_count``, ready-made chunks):
    concurrent claims of one owner queue on the lock, so none ends over the limit."""
    async with conn.transaction():
        # Serialise claims of one id, which must be unique across owners too (routes take ids alone).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (str(document_id),))
        # The caller's documents in flight with this id or content whose replica is gone fail now.
        await liveness.fail_dead_claims(conn, owner_id, document_id, content_hash)
        cur = await conn.execute(
            "SELECT owner_id, ingestion_status FROM documents WHERE id = %s", (document_id,)
        )
        row = await cur.fetchone()
        if row is not None:
            if row[0] != owner_id:
                raise DuplicateDocument(document_id, FOREIGN_ID.format(id=document_id), foreign=True)
            if row[1] != "failed":
                raise DuplicateDocument(document_id, f"a document with id {document_id} already exists")
            # A failed attempt with this id is replaced by the new one.
            cur = await conn.execute(
                "DELETE FROM documents WHERE owner_id = %s AND id = %s RETURNING owner_id, chunk_count",
                (owner_id, document_id),
            )
            await _subtract_deleted(conn, await cur.fetchall())
        cur = await conn.execute(
            """SELECT id FROM documents
               WHERE owner_id = %s AND content_hash = %s AND ingestion_status <> 'failed'""",
            (owner_id, content_hash),
        )
        dup = await cur.fetchone()
        if dup is not None:
            raise DuplicateDocument(dup[0], f"identical content was already uploaded as document {dup[0]}")
        if limits_config is not None:
            owner = await storage.lock_owner(conn, owner_id)  # after the replaced row left the count
            storage.check_documents(limits_config, owner)
            storage.check_chunks(limits_config, owner, max(chunk_count or 0, 1))  # every document has one
        try:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO documents (owner_id, id, collection_ids, document_type, title, metadata,
                                              size_in_bytes, content_hash, ingest_lease, ingest_attempt)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    (owner_id, document_id, list(collection_ids), document_type, title, Jsonb(metadata),
                     size_in_bytes, content_hash, lease, attempt),
                )
                await add_owner_stats(conn, [(owner_id, 1, 0)])
        except psycopg.errors.UniqueViolation:
            cur = await conn.execute(
                "SELECT id FROM documents WHERE owner_id = %s AND content_hash = %s AND ingestion_status <> 'failed'",
                (owner_id, content_hash),
            )
            dup = await cur.fetchone()
            existing = dup[0] if dup else document_id
            raise DuplicateDocument(
                existing, f"identical content was already uploaded as document {existing}"
            ) from None


async def set_status(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    status: str,
    error: str | None = None,
    *,
    document_type: str | None = None,
    title: str | None = None,
    attempt: uuid.UUID | None = None,
) -> bool:
    """Record a step or the failure of the document still in flight (of this ``attempt``, when
    given); False when it is not in flight any more (swept, replaced or deleted)."""
    cur = await conn.execute(
        """UPDATE documents SET ingestion_status = %s, error = %s, updated_at = now(),
                  document_type = coalesce(%s, document_type), title = coalesce(%s, title)
           WHERE owner_id = %s AND id = %s AND ingestion_status NOT IN ('success', 'failed')
             AND (%s::uuid IS NULL OR ingest_attempt = %s::uuid)""",
        (status, error, document_type, title, owner_id, document_id, attempt, attempt),
    )
    return cur.rowcount > 0


async def store_chunks(
    conn: psycopg.AsyncConnection,
    *,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    collection_ids: Sequence[uuid.UUID],
    texts: Sequence[str],
    metadatas: Sequence[dict[str, Any]],
    embeddings: np.ndarray,
    limits_config: LimitsConfig | None = None,
    attempt: uuid.UUID | None = None,
) -> None:
    """All chunks and the success status in one transaction: a document is searchable whole or not at all.

    With limits (``limits_config``), the owner is locked first and a document whose chunks would
    pass ``max_chunks`` raises LimitExceeded before any is written."""
    collections = list(collection_ids)
    async with conn.transaction():
        # The row stays this attempt's until commit (a sweeper's UPDATE waits, then sees success).
        cur = await conn.execute(
            """SELECT 1 FROM documents WHERE owner_id = %s AND id = %s
                 AND ingestion_status NOT IN ('success', 'failed')
                 AND (%s::uuid IS NULL OR ingest_attempt = %s::uuid) FOR UPDATE""",
            (owner_id, document_id, attempt, attempt),
        )
        if await cur.fetchone() is None:
            raise ClaimLost(f"document {document_id} is no longer being ingested by this attempt")
        if limits_config is not None:
            storage.check_chunks(limits_config, await storage.lock_owner(conn, owner_id), len(texts))
        async with conn.cursor() as cur, cur.copy(
            "COPY chunks (owner_id, id, document_id, collection_ids, chunk_order, text, metadata, embedding) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "uuid", "uuid[]", "int4", "text", "jsonb", "vector"])
            for order, (text, meta, vec) in enumerate(zip(texts, metadatas, embeddings, strict=True)):
                await copy.write_row(
                    (owner_id, uuid.uuid4(), document_id, collections, order, text, Jsonb(meta), vec)
                )
        await add_owner_stats(conn, [(owner_id, 0, len(texts))])
        await conn.execute(
            """UPDATE documents SET ingestion_status = 'success', error = NULL, chunk_count = %s, updated_at = now()
               WHERE owner_id = %s AND id = %s""",
            (len(texts), owner_id, document_id),
        )


async def get_document(conn: psycopg.AsyncConnection, document_id: uuid.UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        # S608: the only value formatted in is the constant DOCUMENT_COLUMNS, never input.
        await cur.execute(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.id = %s", (document_id,)  # noqa: S608
        )
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
    return await fetch_page(
        conn,
        columns=sql.SQL(DOCUMENT_COLUMNS),
        from_=sql.SQL("documents d"),
        where=sql.SQL(" AND ").join(where),
        order_by=sql.SQL("d.created_at DESC, d.id"),
        params=params,
        limit=limit,
        offset=offset,
    )


async def list_chunks(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID, *, limit: int, offset: int,
    include_vectors: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    vec = ", embedding" if include_vectors else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        # S608: the only value formatted in is vec, one of two constant strings, never input.
        await cur.execute(
            f"""SELECT id, document_id, owner_id, collection_ids, text, metadata, chunk_order{vec}
                FROM chunks WHERE owner_id = %s AND document_id = %s
                ORDER BY chunk_order LIMIT %s OFFSET %s""",  # noqa: S608
            (owner_id, document_id, limit, offset),
        )
        rows = await cur.fetchall()
        await cur.execute(
            "SELECT chunk_count FROM documents WHERE owner_id = %s AND id = %s", (owner_id, document_id)
        )
        total = await cur.fetchone()
    return rows, int(total["chunk_count"]) if total else 0


async def delete_document(conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID) -> bool:
    """Delete the document and (by cascade) its chunks, counted out of ``owner_stats``."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM documents WHERE owner_id = %s AND id = %s RETURNING owner_id, chunk_count",
            (owner_id, document_id),
        )
        deleted = await cur.fetchall()
        await _subtract_deleted(conn, deleted)
    return bool(deleted)


async def fail_interrupted(conn: psycopg.AsyncConnection) -> int:
    """Documents left mid-ingestion by a process that died are failed, so they can be uploaded
    again: those of a replica whose lease is gone at once, rows from before leases after 15
    minutes without progress (:func:`liveness.sweep`, which every replica also runs periodically)."""
    return await liveness.sweep(conn)


# -- changing documents -------------------------------------------------------------------------

# A chunk's metadata is its document's metadata merged with the chunk's own (which wins). When the
# document's metadata changes, each chunk keeps the keys it holds with a value other than the old
# document's (its own), and takes everything else from the new document metadata.
_REBASE_CHUNK_METADATA = """
    UPDATE chunks c SET metadata = %(new)s::jsonb || coalesce(
        (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(c.metadata) AS e(key, value)
         WHERE (%(old)s::jsonb -> e.key) IS DISTINCT FROM e.value),
        '{}'::jsonb)
    WHERE c.owner_id = %(owner)s AND c.document_id = %(doc)s
"""


async def update_document_metadata(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID,
    document_id: uuid.UUID,
    updates: Sequence[dict[str, Any]],
    *,
    replace: bool,
) -> dict[str, Any] | None:
    """Merge ``updates`` (in order) into the metadata, or replace it with their merge; the chunks
    follow in the same transaction, so search filters see the change at once. None if no such
    document; DocumentBusy while it is being ingested."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT metadata, ingestion_status FROM documents WHERE owner_id = %s AND id = %s FOR UPDATE",
            (owner_id, document_id),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        if row["ingestion_status"] not in TERMINAL_STATUSES:
            raise DocumentBusy(f"document {document_id} is still being ingested ({row['ingestion_status']})")
        old: dict[str, Any] = row["metadata"]
        new: dict[str, Any] = {} if replace else dict(old)
        for item in updates:
            new.update(item)
        await cur.execute(
            "UPDATE documents SET metadata = %s, updated_at = now() WHERE owner_id = %s AND id = %s",
            (Jsonb(new), owner_id, document_id),
        )
        await cur.execute(
            _REBASE_CHUNK_METADATA, {"new": Jsonb(new), "old": Jsonb(old), "owner": owner_id, "doc": document_id}
        )
        # S608: the only value formatted in is the constant DOCUMENT_COLUMNS, never input.
        await cur.execute(
            f"SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.owner_id = %s AND d.id = %s",  # noqa: S608
            (owner_id, document_id),
        )
        return await cur.fetchone()


async def delete_documents_where(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID | None,
    filter_clause: sql.Composable,
    filter_params: dict[str, Any],
) -> list[uuid.UUID]:
    """Delete the documents (and by cascade their chunks) matching a filter compiled for
    ``DOCUMENT_FILTER_ALIAS``; only ``owner_id``'s when given. Returns the deleted ids.

    The filter sees a document as: ``id`` and ``document_id`` (its id), ``owner_id``,
    ``collection_ids``, ``created_at``, and ``metadata``, which is the document's metadata over a
    default ``document_type`` key (the column's value), as in R2R's chunk metadata.
    """
    owner = sql.SQL("d.owner_id = %(delete_owner)s") if owner_id is not None else sql.SQL("TRUE")
    query = sql.SQL(
        """DELETE FROM documents t
           USING (SELECT {x}.owner_id, {x}.id FROM (
                      SELECT d.owner_id, d.id, d.id AS document_id, d.collection_ids, d.created_at,
                             jsonb_build_object('document_type', d.document_type) || d.metadata AS metadata
                      FROM documents d WHERE {owner}) AS {x}
                  WHERE {filter}) AS m
           WHERE t.owner_id = m.owner_id AND t.id = m.id
           RETURNING t.owner_id, t.chunk_count, t.id"""
    ).format(x=sql.Identifier(DOCUMENT_FILTER_ALIAS), owner=owner, filter=filter_clause)
    params = {**filter_params, "delete_owner": owner_id}
    async with conn.transaction():
        cur = await conn.execute(query, params)
        rows = await cur.fetchall()
        await _subtract_deleted(conn, rows)
    return [r[2] for r in rows]


async def document_collections(
    conn: psycopg.AsyncConnection,
    collection_ids: Sequence[uuid.UUID],
    *,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """The collections among ``collection_ids``, newest first, with their member and document counts."""
    ids = list(collection_ids)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT c.id, c.owner_id, c.name, c.description, c.created_at, c.updated_at,
                      (SELECT count(*) FROM collection_users cu WHERE cu.collection_id = c.id) AS user_count,
                      (SELECT count(*) FROM documents d WHERE d.collection_ids @> ARRAY[c.id]) AS document_count
               FROM collections c WHERE c.id = ANY(%(ids)s::uuid[])
               ORDER BY c.created_at DESC, c.id LIMIT %(limit)s OFFSET %(offset)s""",
            {"ids": ids, "limit": limit, "offset": offset},
        )
        rows = await cur.fetchall()
        await cur.execute("SELECT count(*) AS n FROM collections WHERE id = ANY(%s::uuid[])", (ids,))
        total = int((await cur.fetchone() or {"n": 0})["n"])
    return rows, total


# -- chunks by id ---------------------------------------------------------------------------------


async def get_chunk(
    conn: psycopg.AsyncConnection,
    chunk_id: uuid.UUID,
    scope_clause: sql.Composable,
    scope_params: dict[str, Any],
    *,
    include_vectors: bool = False,
) -> dict[str, Any] | None:
    """The chunk with this id that the scope (a clause over alias ``c``) lets the caller read."""
    cols = CHUNK_COLUMNS + (", c.embedding" if include_vectors else "")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {cols} FROM chunks c WHERE c.id = %(chunk_id)s AND {scope} ORDER BY c.owner_id LIMIT 1"
            ).format(
                cols=sql.SQL(cols), scope=scope_clause
            ),
            {**scope_params, "chunk_id": chunk_id},
        )
        return await cur.fetchone()


async def update_chunk(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID,
    chunk_id: uuid.UUID,
    *,
    text: str | None,
    metadata: dict[str, Any] | None,
    embedding: np.ndarray | None,
) -> dict[str, Any] | None:
    """Set what is given (text with its embedding, metadata); the tsvector follows the text by itself."""
    if (text is None) != (embedding is None):
        raise ValueError("new text and its embedding go together")
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # S608: the only value formatted in is the constant CHUNK_COLUMNS, never input.
        await cur.execute(
            f"""UPDATE chunks c SET text = coalesce(%(text)s, c.text),
                           metadata = coalesce(%(metadata)s, c.metadata),
                           embedding = coalesce(%(embedding)s::vector, c.embedding)
                    WHERE c.owner_id = %(owner)s AND c.id = %(id)s
                    RETURNING {CHUNK_COLUMNS}""",  # noqa: S608
            {
                "text": text,
                "metadata": Jsonb(metadata) if metadata is not None else None,
                "embedding": embedding,
                "owner": owner_id,
                "id": chunk_id,
            },
        )
        row = await cur.fetchone()
        if row is not None:
            await cur.execute(
                "UPDATE documents SET updated_at = now() WHERE owner_id = %s AND id = %s",
                (owner_id, row["document_id"]),
            )
    return row


async def delete_chunk(conn: psycopg.AsyncConnection, owner_id: uuid.UUID, chunk_id: uuid.UUID) -> bool:
    """Delete one chunk and count it out of its document (in one statement) and out of ``owner_stats``."""
    async with conn.transaction():
        cur = await conn.execute(
            """WITH gone AS (DELETE FROM chunks WHERE owner_id = %(owner)s AND id = %(id)s RETURNING document_id)
               UPDATE documents d SET chunk_count = d.chunk_count - 1, updated_at = now()
               FROM gone WHERE d.owner_id = %(owner)s AND d.id = gone.document_id
               RETURNING d.id""",
            {"owner": owner_id, "id": chunk_id},
        )
        if await cur.fetchone() is None:
            return False
        await add_owner_stats(conn, [(owner_id, 0, -1)])
        return True
