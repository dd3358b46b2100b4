"""``/v3/collections``: create, list, read, update and delete collections; their documents and
users; and the same memberships from the user's side, ``/v3/users/{id}/collections``.

Shapes follow R2R's v3 API (``CollectionResponse``). Members read a collection; only its owner
or a superuser changes it; anyone else is told it does not exist (404).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragkeep.api.deps import DbDep, Limit, Offset, PrincipalDep, ReadsDep, ServicesDep
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import (
    CollectionOut,
    DocumentOut,
    GenericBoolean,
    GenericMessage,
    PaginatedResults,
    Results,
    UserOut,
    visible_user_out,
)
from ragkeep.auth import collections as coll
from ragkeep.auth import users
from ragkeep.auth.users import Principal
from ragkeep.db.shared import SharedConnection
from ragkeep.ingest import store
from ragkeep.text import text_problem

router = APIRouter(tags=["collections"], route_class=GuardedRoute)
PREFIX = "/v3/collections"

MAX_NAME = 256
MAX_DESCRIPTION = 10_000


def _name(v: str | None) -> str | None:
    if v is None:
        return v
    if not v.strip():
        raise ValueError("must not be blank")
    if problem := text_problem(v):
        raise ValueError(problem)
    return v


def _description(v: str | None) -> str | None:
    if v is not None and (problem := text_problem(v)):
        raise ValueError(problem)
    return v


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        return _name(v)

    @field_validator("description")
    @classmethod
    def _check_description(cls, v: str | None) -> str | None:
        return _description(v)


class CollectionUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, min_length=1, max_length=MAX_NAME)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    #: R2R asks an LLM for a description; ragkeep has none, so only false is accepted.
    generate_description: bool | None = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        return _name(v)

    @field_validator("description")
    @classmethod
    def _check_description(cls, v: str | None) -> str | None:
        return _description(v)


def _out(row: dict[str, Any]) -> CollectionOut:
    return CollectionOut.model_validate(row)


@router.post(PREFIX, response_model=Results[CollectionOut], status_code=201)
async def create_collection(
    body: CollectionCreate, principal: PrincipalDep, services: ServicesDep, db: DbDep
) -> Results[CollectionOut]:
    async with db.connection() as conn:
        row = await coll.create_collection(
            conn, principal.id, body.name, body.description, limits_config=services.settings.limits
        )
    return Results(results=_out(row))


@router.get(PREFIX, response_model=PaginatedResults[list[CollectionOut]])
async def list_collections(
    principal: PrincipalDep,
    reads: ReadsDep,
    ids: Annotated[list[uuid.UUID] | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
    owner_only: bool = False,
) -> PaginatedResults[list[CollectionOut]]:
    """The caller's collections (owned or member of); a superuser's list has everyone's."""
    visible_to = None if principal.is_superuser and not owner_only else principal.id
    async with reads.connection() as conn:
        rows, total = await coll.list_collections(
            conn, visible_to=visible_to, owner_only=owner_only, ids=ids, offset=offset, limit=limit
        )
    return PaginatedResults(results=[_out(r) for r in rows], total_entries=total)


# Registered before "/{id}/..." so that a collection named e.g. "documents" is found by name.
@router.get(PREFIX + "/name/{collection_name:path}", response_model=Results[CollectionOut])
async def get_collection_by_name(
    collection_name: str,
    principal: PrincipalDep,
    db: DbDep,
    owner_id: uuid.UUID | None = None,
) -> Results[CollectionOut]:
    """The collection ``owner_id`` (default: the caller) has under that name, if the caller may see it."""
    if problem := text_problem(collection_name):
        raise ApiError(422, f"collection_name: {problem}")
    async with db.connection() as conn:
        row = await coll.get_collection_by_name(conn, owner_id or principal.id, collection_name)
    if row is None or not coll.can_view(principal, row["id"], row["owner_id"]):
        raise ApiError(404, f"no collection named {collection_name!r} found")
    return Results(results=_out(row))


async def _authorized(
    db: SharedConnection, principal: Principal, collection_id: uuid.UUID, action: coll.Action
) -> None:
    async with db.connection() as conn:
        await coll.authorize(conn, principal, collection_id, action)


@router.get(PREFIX + "/{id}", response_model=Results[CollectionOut])
async def get_collection(id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> Results[CollectionOut]:
    async with db.connection() as conn:
        row = await coll.get_collection(conn, id)
    if row is None or not coll.can_view(principal, id, row["owner_id"]):
        raise ApiError(404, f"collection {id} not found")
    return Results(results=_out(row))


@router.post(PREFIX + "/{id}", response_model=Results[CollectionOut])
async def update_collection(
    id: uuid.UUID, body: CollectionUpdate, principal: PrincipalDep, db: DbDep
) -> Results[CollectionOut]:
    if body.generate_description:
        raise ApiError(422, "generate_description: ragkeep has no language model to write descriptions; send one")
    async with db.connection() as conn:
        await coll.authorize(conn, principal, id, "manage")
        row = await coll.update_collection(conn, id, name=body.name, description=body.description)
    return Results(results=_out(row))


@router.delete(PREFIX + "/{id}", response_model=Results[GenericBoolean])
async def delete_collection(id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> Results[GenericBoolean]:
    """Delete the collection; its documents stay with their owners, no longer in it."""
    async with db.connection() as conn:
        await coll.authorize(conn, principal, id, "manage")
        await coll.delete_collection(conn, id)
    return Results(results=GenericBoolean(success=True))


@router.get(PREFIX + "/{id}/documents", response_model=PaginatedResults[list[DocumentOut]])
async def list_collection_documents(
    id: uuid.UUID,
    principal: PrincipalDep,
    db: DbDep,
    reads: ReadsDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> PaginatedResults[list[DocumentOut]]:
    """The collection's documents, newest first, each with all the collections it is in."""
    await _authorized(db, principal, id, "view")
    async with reads.connection() as conn:
        rows, total = await store.list_documents(
            conn,
            sql.SQL("d.collection_ids @> %(in_collection)s::uuid[]"),
            {"in_collection": [id]},
            ids=None,
            limit=limit,
            offset=offset,
        )
    return PaginatedResults(
        results=[DocumentOut.from_row(r) for r in rows],
        total_entries=total,
    )


@router.post(PREFIX + "/{id}/documents/{document_id}", response_model=Results[GenericMessage])
async def add_document(
    id: uuid.UUID, document_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericMessage]:
    """Share a document through the collection: the caller must own both (or be a superuser)."""
    async with db.connection() as conn:
        await coll.add_document(conn, principal, id, document_id)
    return Results(results=GenericMessage(message="Document assigned to collection successfully"))


@router.delete(PREFIX + "/{id}/documents/{document_id}", response_model=Results[GenericBoolean])
async def remove_document(
    id: uuid.UUID, document_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    async with db.connection() as conn:
        await coll.remove_document(conn, principal, id, document_id)
    return Results(results=GenericBoolean(success=True))


@router.get(PREFIX + "/{id}/users", response_model=PaginatedResults[list[UserOut]])
async def list_collection_users(
    id: uuid.UUID,
    principal: PrincipalDep,
    db: DbDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> PaginatedResults[list[UserOut]]:
    await _authorized(db, principal, id, "view")
    async with db.connection() as conn:
        rows, total = await users.list_users(conn, collection_id=id, offset=offset, limit=limit)
    return PaginatedResults(results=[visible_user_out(principal, u) for u, _ in rows], total_entries=total)


@router.post(PREFIX + "/{id}/users/{user_id}", response_model=Results[GenericBoolean])
async def add_user(
    id: uuid.UUID, user_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    """Make a user a member: the collection's owner or a superuser may."""
    await _add_member(db, principal, id, user_id)
    return Results(results=GenericBoolean(success=True))


@router.delete(PREFIX + "/{id}/users/{user_id}", response_model=Results[GenericBoolean])
async def remove_user(
    id: uuid.UUID, user_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    """End a membership: the collection's owner or a superuser may, and a member may leave."""
    await _remove_member(db, principal, id, user_id)
    return Results(results=GenericBoolean(success=True))


# -- the same memberships from the user's side: /v3/users/{id}/collections --------------------


@router.get("/v3/users/{id}/collections", response_model=PaginatedResults[list[CollectionOut]])
async def list_user_collections(
    id: uuid.UUID,
    principal: PrincipalDep,
    db: DbDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> PaginatedResults[list[CollectionOut]]:
    """The collections a user owns or is a member of: their own, or anyone's for a superuser."""
    if id != principal.id and not principal.is_superuser:
        raise ApiError(403, "you may only list your own collections")
    async with db.connection() as conn:
        if id != principal.id and await users.get_user(conn, id) is None:
            raise ApiError(404, f"user {id} not found")
        rows, total = await coll.list_collections(conn, visible_to=id, offset=offset, limit=limit)
    return PaginatedResults(results=[_out(r) for r in rows], total_entries=total)


@router.post("/v3/users/{id}/collections/{collection_id}", response_model=Results[GenericBoolean])
async def add_user_to_collection(
    id: uuid.UUID, collection_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    """As ``POST /v3/collections/{collection_id}/users/{id}``: only the collection's owner or a
    superuser adds members (R2R lets any user add themselves to any collection)."""
    await _add_member(db, principal, collection_id, id)
    return Results(results=GenericBoolean(success=True))


@router.delete("/v3/users/{id}/collections/{collection_id}", response_model=Results[GenericBoolean])
async def remove_user_from_collection(
    id: uuid.UUID, collection_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    """As ``DELETE /v3/collections/{collection_id}/users/{id}``."""
    await _remove_member(db, principal, collection_id, id)
    return Results(results=GenericBoolean(success=True))


async def _add_member(db: SharedConnection, principal: Principal, collection_id: uuid.UUID, user_id: uuid.UUID) -> None:
    async with db.connection() as conn:
        try:
            await coll.add_user(conn, principal, collection_id, user_id)
        except psycopg.errors.ForeignKeyViolation:  # the user was deleted a moment ago
            raise ApiError(404, f"user {user_id} not found") from None


async def _remove_member(
    db: SharedConnection, principal: Principal, collection_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    async with db.connection() as conn:
        await coll.remove_user(conn, principal, collection_id, user_id)
