"""Users and the caller's identity (``Principal``): the SQL that owns the users table."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ragkeep.auth.passwords import hash_password, verify_password

log = logging.getLogger(__name__)

USER_COLUMNS = (
    "id, email, hashed_password, name, bio, profile_picture, is_superuser, is_active, is_verified, "
    "limits_overrides, created_at, updated_at"
)


class EmailTaken(Exception):
    pass


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


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may read: their own rows and their collections'."""

    id: uuid.UUID
    email: str
    is_superuser: bool
    collection_ids: tuple[uuid.UUID, ...]


_SELECT_USER = f"""
    SELECT {USER_COLUMNS},
           coalesce((SELECT array_agg(cu.collection_id ORDER BY cu.added_at)
                     FROM collection_users cu WHERE cu.user_id = u.id), '{{}}') AS collection_ids
    FROM users u
"""


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
    assert row is not None
    user = await get_user(conn, row[0])
    assert user is not None
    return user


async def authenticate(conn: psycopg.AsyncConnection, email: str, password: str) -> User | None:
    user = await get_user_by_email(conn, email)
    # argon2 costs ~0.1-0.4 s of CPU: off the event loop, and paid even for unknown users so
    # that timing does not reveal which emails exist.
    ok = await asyncio.to_thread(verify_password, user.hashed_password if user else _DUMMY_HASH, password)
    if user is None or not user.is_active or not ok:
        return None
    return user


_DUMMY_HASH = hash_password(secrets.token_hex(16))


async def load_principal(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> Principal | None:
    cur = await conn.execute(
        """SELECT u.id, u.email, u.is_superuser,
                  coalesce((SELECT array_agg(cu.collection_id) FROM collection_users cu
                            WHERE cu.user_id = u.id), '{}')
           FROM users u WHERE u.id = %s AND u.is_active""",
        (user_id,),
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
