"""Users and the caller's identity (loading a :class:`~.principal.Principal`): the SQL that owns the
users table."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ragkeep.auth import collections as collections_sql
from ragkeep.auth.passwords import hash_password, verify_password
from ragkeep.auth.principal import Principal as Principal  # re-exported: callers import it from here
from ragkeep.errors import Conflict, InternalError, NotFound

log = logging.getLogger(__name__)

USER_COLUMNS = (
    "id, email, hashed_password, name, bio, profile_picture, is_superuser, is_active, is_verified, "
    "limits_overrides, metadata, password_changed_at, token_generation, created_at, updated_at"
)

#: Columns ``update_user`` may set, each a fixed identifier (never caller text).
UPDATABLE = ("email", "name", "bio", "profile_picture", "is_superuser", "limits_overrides")


class EmailTaken(Conflict):
    """Another account has this email."""

    def __init__(self, email: str) -> None:
        super().__init__(f"a user with email {email} already exists")
        self.email = email


class LastSuperuser(Conflict):
    """The change would leave no active superuser to administer the server."""

    def __init__(self) -> None:
        super().__init__("this is the last active superuser; promote another first")


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    hashed_password: str
    name: str | None
    bio: str | None
    profile_picture: str | None
    is_superuser: bool
    is_active: bool
    is_verified: bool
    limits_overrides: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    collection_ids: list[uuid.UUID] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    password_changed_at: datetime | None = None
    #: Goes into every token issued to the user; changing the password adds one, ending them all.
    token_generation: int = 0


@dataclass(frozen=True)
class UserUsage:
    """What a user stores: R2R's ``num_files`` and ``total_size_in_bytes`` of the users list."""

    num_files: int
    total_size_in_bytes: int


# S608: the only value formatted in is the constant USER_COLUMNS, never input.
_SELECT_USER = f"""
    SELECT {USER_COLUMNS},
           coalesce((SELECT array_agg(cu.collection_id ORDER BY cu.added_at)
                     FROM collection_users cu WHERE cu.user_id = u.id), '{{}}') AS collection_ids
    FROM users u
"""  # noqa: S608


async def get_user(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> User | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SELECT_USER + " WHERE u.id = %s", (user_id,))
        row = await cur.fetchone()
    return User(**row) if row else None


async def get_user_by_email(conn: psycopg.AsyncConnection, email: str) -> User | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SELECT_USER + " WHERE lower(u.email) = lower(%s)", (email,))
        row = await cur.fetchone()
    return User(**row) if row else None


async def list_users(
    conn: psycopg.AsyncConnection,
    *,
    ids: Sequence[uuid.UUID] | None = None,
    emails: Sequence[str] | None = None,
    collection_id: uuid.UUID | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[tuple[User, UserUsage]], int]:
    """A page of users ordered by email, with what each stores, and the number of matches.

    ``ids`` and ``emails`` (case-insensitive, exact) filter; ``collection_id`` keeps its members."""
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    if ids:
        where.append(sql.SQL("u.id = ANY(%(ids)s::uuid[])"))
        params["ids"] = list(ids)
    if emails:
        where.append(sql.SQL("lower(u.email) = ANY(%(emails)s::text[])"))
        params["emails"] = [e.lower() for e in emails]
    if collection_id is not None:
        where.append(
            sql.SQL("EXISTS (SELECT 1 FROM collection_users m WHERE m.user_id = u.id AND m.collection_id = %(cid)s)")
        )
        params["cid"] = collection_id
    cond = sql.SQL(" AND ").join(where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT * FROM ({select} WHERE {cond} ORDER BY lower(u.email), u.id "
                "LIMIT %(limit)s OFFSET %(offset)s) page, "
                "LATERAL (SELECT count(*) AS num_files, coalesce(sum(d.size_in_bytes), 0) AS total_size_in_bytes "
                "         FROM documents d WHERE d.owner_id = page.id) usage "
                "ORDER BY lower(page.email), page.id"
            ).format(select=sql.SQL(_SELECT_USER), cond=cond),
            {**params, "limit": limit, "offset": offset},
        )
        rows = await cur.fetchall()
        await cur.execute(sql.SQL("SELECT count(*) AS n FROM users u WHERE {}").format(cond), params)
        total = int((await cur.fetchone() or {"n": 0})["n"])
    out = []
    for r in rows:
        usage = UserUsage(int(r.pop("num_files")), int(r.pop("total_size_in_bytes")))
        out.append((User(**r), usage))
    return out, total


async def create_user(
    conn: psycopg.AsyncConnection,
    email: str,
    password: str,
    *,
    name: str | None = None,
    bio: str | None = None,
    profile_picture: str | None = None,
    is_superuser: bool = False,
) -> User:
    try:
        async with conn.transaction():
            cur = await conn.execute(
                """INSERT INTO users (email, hashed_password, name, bio, profile_picture, is_superuser)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
                (email, await asyncio.to_thread(hash_password, password), name, bio, profile_picture, is_superuser),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation as e:
        raise EmailTaken(email) from e
    if row is None:
        raise InternalError("INSERT INTO users ... RETURNING id returned no row")
    user = await get_user(conn, row[0])
    if user is None:  # committed above; deleted in the instant since
        raise NotFound(f"user {row[0]} not found")
    return user


def merge_metadata(current: dict[str, Any], patch: dict[str, str | None]) -> dict[str, Any]:
    """R2R's Stripe-style merge: a string sets a key, ``""`` or null removes it, ``{}`` clears all."""
    if not patch:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


async def _other_active_superusers(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> int:
    """Active superusers other than ``user_id``, their rows locked so two concurrent demotions
    (or deletions) cannot each believe the other remains."""
    cur = await conn.execute(
        "SELECT id FROM users WHERE is_superuser AND is_active AND id <> %s FOR UPDATE", (user_id,)
    )
    return len(await cur.fetchall())


async def update_user(
    conn: psycopg.AsyncConnection,
    user_id: uuid.UUID,
    changes: dict[str, Any],
    metadata_patch: dict[str, str | None] | None = None,
) -> User | None:
    """Set the given ``UPDATABLE`` columns and merge ``metadata_patch``; None if there is no such user.

    Raises EmailTaken for an email another account has, LastSuperuser for demoting the last one."""
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    try:
        async with conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT is_superuser, metadata FROM users WHERE id = %s FOR UPDATE", (user_id,)
                )
                current = await cur.fetchone()
            if current is None:
                return None
            if (
                changes.get("is_superuser") is False
                and current["is_superuser"]
                and await _other_active_superusers(conn, user_id) == 0
            ):
                raise LastSuperuser()
            values = dict(changes)
            if "limits_overrides" in values and values["limits_overrides"] is not None:
                values["limits_overrides"] = Jsonb(values["limits_overrides"])
            if metadata_patch is not None:
                values["metadata"] = Jsonb(merge_metadata(current["metadata"] or {}, metadata_patch))
            if values:
                assignments = sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
                )
                await conn.execute(
                    sql.SQL("UPDATE users SET {}, updated_at = now() WHERE id = %(user_id)s").format(assignments),
                    {**values, "user_id": user_id},
                )
    except psycopg.errors.UniqueViolation as e:
        raise EmailTaken(changes.get("email", "")) from e
    return await get_user(conn, user_id)


async def check_password(conn: psycopg.AsyncConnection, user_id: uuid.UUID, password: str) -> bool:
    cur = await conn.execute("SELECT hashed_password FROM users WHERE id = %s", (user_id,))
    row = await cur.fetchone()
    ok = await asyncio.to_thread(verify_password, row[0] if row else _DUMMY_HASH, password)
    return row is not None and ok


async def set_password(
    conn: psycopg.AsyncConnection, user_id: uuid.UUID, password: str, *, keep_token_id: str | None = None
) -> None:
    """Store a new password and end every session of the user: all access and refresh tokens
    issued before (``token_generation`` moves on), except the access token ``keep_token_id`` (the
    caller's own, so the client that changed the password goes on working until it expires)."""
    hashed = await asyncio.to_thread(hash_password, password)
    await conn.execute(
        """UPDATE users SET hashed_password = %s, password_changed_at = now(), updated_at = now(),
                            token_generation = token_generation + 1, kept_token_id = %s
           WHERE id = %s""",
        (hashed, keep_token_id, user_id),
    )


async def delete_user(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> bool:
    """Delete a user with everything they own, in one transaction; False if there is no such user.

    Their documents and chunks, API keys, memberships and revocations go by foreign-key cascade;
    the collections they own go too, and those collections' ids are first taken out of the other
    owners' documents and chunks, so no row keeps pointing at a collection that is gone.
    Raises LastSuperuser rather than delete the last active superuser."""
    async with conn.transaction():
        cur = await conn.execute("SELECT is_superuser, is_active FROM users WHERE id = %s FOR UPDATE", (user_id,))
        row = await cur.fetchone()
        if row is None:
            return False
        if row[0] and row[1] and await _other_active_superusers(conn, user_id) == 0:
            raise LastSuperuser()
        await collections_sql.delete_owned_by(conn, user_id)
        await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return True


async def usage_counts(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> dict[str, int]:
    """Documents and chunks the user owns (kept current in owner_stats) and collections they own."""
    cur = await conn.execute(
        """SELECT coalesce((SELECT document_count FROM owner_stats WHERE owner_id = %(u)s), 0),
                  coalesce((SELECT chunk_count FROM owner_stats WHERE owner_id = %(u)s), 0),
                  (SELECT count(*) FROM collections WHERE owner_id = %(u)s)""",
        {"u": user_id},
    )
    row = await cur.fetchone()
    if row is None:
        raise InternalError("a SELECT of three aggregates returned no row")
    return {"documents": int(row[0]), "chunks": int(row[1]), "collections": int(row[2])}


async def authenticate(conn: psycopg.AsyncConnection, email: str, password: str) -> User | None:
    return await verify_user(await get_user_by_email(conn, email), password)


async def verify_user(user: User | None, password: str) -> User | None:
    """``user`` if the password is theirs and they are active; needs no connection (the log-in route
    gives its own back to the pool while argon2 runs)."""
    # argon2 costs ~0.1-0.4 s of CPU: off the event loop, and paid even for unknown users so
    # that timing does not reveal which emails exist.
    ok = await asyncio.to_thread(verify_password, user.hashed_password if user else _DUMMY_HASH, password)
    if user is None or not user.is_active or not ok:
        return None
    return user


_DUMMY_HASH = hash_password(secrets.token_hex(16))


async def load_principal(
    conn: psycopg.AsyncConnection,
    user_id: uuid.UUID,
    *,
    token_id: str | None = None,
    generation: int | None = None,
) -> Principal | None:
    """The caller, or None if the user is gone or inactive, or the token (``token_id``) was revoked:
    logged out, or issued before the user's password changed (its ``generation`` is not the
    user's, and it is not the one token the change kept).

    ``token_id`` and ``generation`` default to those a ``TokenSubject`` carries (what
    ``TokenIssuer.decode`` returns), so a bearer request checks revocation in this same query:
    one primary-key probe. API keys pass a plain UUID and have no token to check."""
    if token_id is None:
        token_id = getattr(user_id, "token_id", None)
    if generation is None:
        generation = getattr(user_id, "generation", 0) if token_id is not None else None
    cur = await conn.execute(
        """SELECT u.id, u.email, u.is_superuser,
                  coalesce((SELECT array_agg(cu.collection_id) FROM collection_users cu
                            WHERE cu.user_id = u.id), '{}')
           FROM users u
           WHERE u.id = %(user)s AND u.is_active
             AND (%(jti)s::text IS NULL
                  OR ((u.token_generation = %(gen)s OR u.kept_token_id = %(jti)s)
                      AND NOT EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = %(jti)s)))""",
        {"user": user_id, "jti": token_id, "gen": generation},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Principal(id=row[0], email=row[1], is_superuser=row[2], collection_ids=tuple(row[3]))


async def ensure_admin(
    conn: psycopg.AsyncConnection, email: str | None, password: str | None, home: Path
) -> None:
    """Create the superuser at first start; generate a password, kept in an owner-only file, if none is given."""
    cur = await conn.execute("SELECT count(*) FROM users WHERE is_superuser")
    row = await cur.fetchone()
    if row and row[0] > 0 and not email:
        return
    email = email or "admin@example.com"
    if await get_user_by_email(conn, email) is not None:
        return
    if not password:
        password = secrets.token_urlsafe(18)
        home.mkdir(parents=True, exist_ok=True)
        path = home / "admin-password.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{email}\n{password}\n")
        log.warning("created superuser %s; its generated password is in %s (readable by you only)", email, path)
    else:
        log.info("created superuser %s", email)
    try:
        await create_user(conn, email, password, is_superuser=True, name="admin")
    except EmailTaken:
        pass  # another replica created it at the same moment
