"""Collections: who may see and change them, and the SQL that owns them.

A collection has one owner (its creator) and members (``collection_users``; the owner is one).
Members read what is shared with the collection; only the owner or a superuser changes it.
Someone who is neither gets "not found", so a collection's existence does not leak.

Which collections a document belongs to is stored twice: ``documents.collection_ids`` (what the
API shows) and ``chunks.collection_ids`` (what search scopes on). Every change here updates both
in one transaction, with the document row locked, so search never disagrees with the document.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ragkeep.auth.principal import Principal
from ragkeep.config import LimitsConfig
from ragkeep.db.paging import fetch_page
from ragkeep.errors import Conflict, Forbidden, InternalError, NotFound
from ragkeep.limits import storage

#: R2R reports knowledge-graph state per collection; ragkeep builds no graphs.
GRAPH_STATUS = "pending"
#: A document's membership may change only once ingestion has finished writing its chunks.
SETTLED_STATUSES = ("success", "failed")

Action = Literal["view", "manage"]


_COLUMNS = sql.SQL(
    """c.id, c.owner_id, c.name, c.description, c.created_at, c.updated_at,
       (SELECT count(*) FROM collection_users cu WHERE cu.collection_id = c.id) AS user_count,
       (SELECT count(*) FROM documents d WHERE d.collection_ids @> ARRAY[c.id]) AS document_count"""
)


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "graph_cluster_status": GRAPH_STATUS, "graph_sync_status": GRAPH_STATUS}


async def _fetch(conn: psycopg.AsyncConnection, where: sql.Composable, params: dict[str, Any]) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT {} FROM collections c WHERE {}").format(_COLUMNS, where), params)
        row = await cur.fetchone()
    return _shape(row) if row else None


async def get_collection(conn: psycopg.AsyncConnection, collection_id: uuid.UUID) -> dict[str, Any] | None:
    """The collection with its user and document counts (R2R's CollectionResponse fields)."""
    return await _fetch(conn, sql.SQL("c.id = %(id)s"), {"id": collection_id})


async def get_collection_by_name(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, name: str
) -> dict[str, Any] | None:
    return await _fetch(
        conn, sql.SQL("c.owner_id = %(owner)s AND c.name = %(name)s"), {"owner": owner_id, "name": name}
    )


def can_view(principal: Principal, collection_id: uuid.UUID, owner_id: uuid.UUID) -> bool:
    return principal.is_superuser or owner_id == principal.id or collection_id in principal.collection_ids


async def authorize(
    conn: psycopg.AsyncConnection, principal: Principal, collection_id: uuid.UUID, action: Action, *, lock: bool = False
) -> uuid.UUID:
    """The collection's owner id if ``principal`` may ``action`` it; NotFound or Forbidden otherwise.

    ``lock`` takes a share lock on the row for the rest of the transaction, so the collection
    cannot be deleted while documents or users are being added to it."""
    cur = await conn.execute(
        "SELECT owner_id FROM collections WHERE id = %s FOR SHARE" if lock
        else "SELECT owner_id FROM collections WHERE id = %s",
        (collection_id,),
    )
    row = await cur.fetchone()
    if row is None or not can_view(principal, collection_id, row[0]):
        raise NotFound(f"collection {collection_id} not found")
    if action == "manage" and not (principal.is_superuser or row[0] == principal.id):
        raise Forbidden("only the collection's owner or a superuser may change it; members may only read it")
    owner_id: uuid.UUID = row[0]
    return owner_id


async def list_collections(
    conn: psycopg.AsyncConnection,
    *,
    visible_to: uuid.UUID | None,
    owner_only: bool = False,
    ids: Sequence[uuid.UUID] | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """A page of collections, newest first, and how many match.

    ``visible_to`` keeps those the user owns or is a member of (None: all, for a superuser);
    ``owner_only`` keeps those they own."""
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if visible_to is not None:
        params["user"] = visible_to
        if owner_only:
            where.append(sql.SQL("c.owner_id = %(user)s"))
        else:
            where.append(
                sql.SQL(
                    "(c.owner_id = %(user)s OR EXISTS (SELECT 1 FROM collection_users m "
                    "WHERE m.collection_id = c.id AND m.user_id = %(user)s))"
                )
            )
    if ids:
        where.append(sql.SQL("c.id = ANY(%(ids)s::uuid[])"))
        params["ids"] = list(ids)
    rows, total = await fetch_page(
        conn,
        columns=_COLUMNS,
        from_=sql.SQL("collections c"),
        where=sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE"),
        order_by=sql.SQL("c.created_at DESC, c.id"),
        params=params,
        limit=limit,
        offset=offset,
    )
    return [_shape(r) for r in rows], total


async def create_collection(
    conn: psycopg.AsyncConnection,
    owner_id: uuid.UUID,
    name: str,
    description: str | None,
    *,
    limits_config: LimitsConfig | None = None,
) -> dict[str, Any]:
    """Create a collection whose owner is also its first member; Conflict if the owner has one so named.

    With ``limits_config``, the owner is locked first and LimitExceeded raised at ``max_collections``:
    concurrent creations by one owner queue on the lock, so none ends over the limit."""
    try:
        async with conn.transaction():
            if limits_config is not None:
                await storage.check_collections(conn, limits_config, await storage.lock_owner(conn, owner_id))
            cur = await conn.execute(
                "INSERT INTO collections (owner_id, name, description) VALUES (%s, %s, %s) RETURNING id",
                (owner_id, name, description),
            )
            row = await cur.fetchone()
            if row is None:
                raise InternalError("INSERT INTO collections ... RETURNING id returned no row")
            await conn.execute(
                "INSERT INTO collection_users (collection_id, user_id) VALUES (%s, %s)", (row[0], owner_id)
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"name: you already own a collection named {name!r}") from None
    created = await get_collection(conn, row[0])
    if created is None:  # committed above, and only its owner deletes it
        raise NotFound(f"collection {row[0]} not found")
    return created


async def update_collection(
    conn: psycopg.AsyncConnection, collection_id: uuid.UUID, *, name: str | None, description: str | None
) -> dict[str, Any]:
    changes = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    if changes:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
        )
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    sql.SQL("UPDATE collections SET {}, updated_at = now() WHERE id = %(id)s").format(assignments),
                    {**changes, "id": collection_id},
                )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"name: the owner already has a collection named {name!r}") from None
        if cur.rowcount == 0:
            raise NotFound(f"collection {collection_id} not found")
    updated = await get_collection(conn, collection_id)
    if updated is None:
        raise NotFound(f"collection {collection_id} not found")
    return updated


async def _strip(conn: psycopg.AsyncConnection, collection_ids: list[uuid.UUID], keep_owner: uuid.UUID | None) -> None:
    """Take ``collection_ids`` out of every document and chunk that has them (but ``keep_owner``'s,
    whose rows are about to be deleted anyway). The GIN indexes find the rows."""
    for table in ("documents", "chunks"):
        await conn.execute(
            sql.SQL(
                """UPDATE {table} t
                   SET collection_ids = coalesce(
                       (SELECT array_agg(x ORDER BY o) FROM unnest(t.collection_ids) WITH ORDINALITY AS u(x, o)
                        WHERE x <> ALL(%(ids)s::uuid[])), '{{}}'){touch}
                   WHERE t.collection_ids && %(ids)s::uuid[]
                     AND t.owner_id IS DISTINCT FROM %(keep)s"""
            ).format(
                table=sql.Identifier(table),
                touch=sql.SQL(", updated_at = now()") if table == "documents" else sql.SQL(""),
            ),
            {"ids": collection_ids, "keep": keep_owner},
        )


async def _refuse_unsettled(conn: psycopg.AsyncConnection, collection_id: uuid.UUID) -> None:
    cur = await conn.execute(
        """SELECT id FROM documents WHERE collection_ids @> ARRAY[%s]::uuid[]
           AND ingestion_status NOT IN ('success', 'failed') LIMIT 1""",
        (collection_id,),
    )
    row = await cur.fetchone()
    if row is not None:
        raise Conflict(
            f"document {row[0]} in this collection is still being ingested; try again when its ingestion has finished"
        )


async def delete_collection(conn: psycopg.AsyncConnection, collection_id: uuid.UUID) -> None:
    """Delete the collection and take its id out of documents and chunks, all in one transaction.

    The documents themselves stay (they belong to their owners)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT 1 FROM collections WHERE id = %s FOR UPDATE", (collection_id,))
        if await cur.fetchone() is None:
            raise NotFound(f"collection {collection_id} not found")
        await _refuse_unsettled(conn, collection_id)
        await _strip(conn, [collection_id], None)
        await conn.execute("DELETE FROM collections WHERE id = %s", (collection_id,))


async def delete_owned_by(conn: psycopg.AsyncConnection, owner_id: uuid.UUID) -> None:
    """For deleting a user: their collections go, and so do those ids from other owners' rows.

    Must run inside the caller's transaction; the collection rows are deleted by it (or by the
    users row's cascade)."""
    cur = await conn.execute("SELECT id FROM collections WHERE owner_id = %s FOR UPDATE", (owner_id,))
    owned = [r[0] for r in await cur.fetchall()]
    if owned:
        await _strip(conn, owned, owner_id)
        await conn.execute("DELETE FROM collections WHERE id = ANY(%s)", (owned,))


async def _lock_document(
    conn: psycopg.AsyncConnection, principal: Principal, document_id: uuid.UUID
) -> dict[str, Any]:
    """The document row, locked; NotFound if the caller may not read it.

    The owner is looked up first (no lock), then the row locked by ``(owner_id, id)``: on Citus a
    ``FOR UPDATE`` must name the distribution column (one shard), and ids are unique across
    owners, so the two steps find the same row (one deleted in between is simply not found)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT owner_id FROM documents WHERE id = %s", (document_id,))
        owner = await cur.fetchone()
        row = None
        if owner is not None:
            await cur.execute(
                """SELECT owner_id, collection_ids, ingestion_status FROM documents
                   WHERE owner_id = %s AND id = %s FOR UPDATE""",
                (owner["owner_id"], document_id),
            )
            row = await cur.fetchone()
    if row is None or not (
        principal.is_superuser
        or row["owner_id"] == principal.id
        or set(row["collection_ids"]) & set(principal.collection_ids)
    ):
        raise NotFound(f"document {document_id} not found")
    return row


def _require_settled(document_id: uuid.UUID, doc: dict[str, Any]) -> None:
    if doc["ingestion_status"] not in SETTLED_STATUSES:
        raise Conflict(
            f"document {document_id} is still being ingested ({doc['ingestion_status']}); "
            "its collections can change once ingestion has finished"
        )


async def add_document(
    conn: psycopg.AsyncConnection, principal: Principal, collection_id: uuid.UUID, document_id: uuid.UUID
) -> None:
    """Put a document in a collection: the caller must manage the collection and own the document
    (a superuser may do both for anyone)."""
    async with conn.transaction():
        await authorize(conn, principal, collection_id, "manage", lock=True)
        doc = await _lock_document(conn, principal, document_id)
        if doc["owner_id"] != principal.id and not principal.is_superuser:
            raise Forbidden("only the document's owner or a superuser may add it to a collection")
        if collection_id in doc["collection_ids"]:
            raise Conflict(f"document {document_id} is already in collection {collection_id}")
        _require_settled(document_id, doc)
        await _set_membership(conn, doc["owner_id"], document_id, collection_id, add=True)


async def remove_document(
    conn: psycopg.AsyncConnection, principal: Principal, collection_id: uuid.UUID, document_id: uuid.UUID
) -> None:
    async with conn.transaction():
        await authorize(conn, principal, collection_id, "manage", lock=True)
        doc = await _lock_document(conn, principal, document_id)
        if collection_id not in doc["collection_ids"]:
            raise NotFound(f"document {document_id} is not in collection {collection_id}")
        _require_settled(document_id, doc)
        await _set_membership(conn, doc["owner_id"], document_id, collection_id, add=False)


async def _set_membership(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID, collection_id: uuid.UUID, *, add: bool
) -> None:
    """The document row and all its chunks, together (the caller holds the document's row lock)."""
    change = "array_append(collection_ids, %(cid)s)" if add else "array_remove(collection_ids, %(cid)s)"
    params = {"cid": collection_id, "owner": owner_id, "doc": document_id}
    await conn.execute(
        sql.SQL(
            "UPDATE documents SET collection_ids = {}, updated_at = now() WHERE owner_id = %(owner)s AND id = %(doc)s"
        )
        .format(sql.SQL(change)),
        params,
    )
    await conn.execute(
        sql.SQL("UPDATE chunks SET collection_ids = {} WHERE owner_id = %(owner)s AND document_id = %(doc)s")
        .format(sql.SQL(change)),
        params,
    )


async def add_user(
    conn: psycopg.AsyncConnection, principal: Principal, collection_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Make ``user_id`` a member; only the owner or a superuser may."""
    async with conn.transaction():
        await authorize(conn, principal, collection_id, "manage", lock=True)
        cur = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
        if await cur.fetchone() is None:
            raise NotFound(f"user {user_id} not found")
        cur = await conn.execute(
            "INSERT INTO collection_users (collection_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (collection_id, user_id),
        )
        if cur.rowcount == 0:
            raise Conflict(f"user {user_id} is already a member of collection {collection_id}")


async def remove_user(
    conn: psycopg.AsyncConnection, principal: Principal, collection_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """End ``user_id``'s membership: the owner or a superuser may, and members may leave.

    The owner stays a member (they could no longer read what their collection shares)."""
    async with conn.transaction():
        leaving = user_id == principal.id
        owner_id = await authorize(conn, principal, collection_id, "view" if leaving else "manage")
        if user_id == owner_id:
            raise Conflict(f"user {user_id} owns collection {collection_id} and stays its member")
        cur = await conn.execute(
            "DELETE FROM collection_users WHERE collection_id = %s AND user_id = %s", (collection_id, user_id)
        )
        if cur.rowcount == 0:
            raise NotFound(f"user {user_id} is not a member of collection {collection_id}")
