"""API keys: ``rk_<key id>.<secret>``, stored as a SHA-256 of the secret.

The secret has 256 bits of entropy, so a fast hash is as safe as a slow one here, and it keeps
``X-API-Key`` checks off the CPU budget that argon2 would take on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

PREFIX = "rk_"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_api_key(
    conn: psycopg.AsyncConnection, user_id: uuid.UUID, name: str | None = None, description: str | None = None
) -> tuple[uuid.UUID, str]:
    key_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (id, user_id, key_hash, name, description) VALUES (%s, %s, %s, %s, %s)",
        (key_id, user_id, _digest(secret), name, description),
    )
    return key_id, f"{PREFIX}{key_id.hex}.{secret}"


def parse_api_key(raw: str) -> tuple[uuid.UUID, bytes] | None:
    """The key id and the SHA-256 of the secret of an ``rk_<id>.<secret>`` key; None if malformed."""
    if not raw.startswith(PREFIX) or "." not in raw:
        return None
    key_part, secret = raw[len(PREFIX) :].split(".", 1)
    try:
        return uuid.UUID(hex=key_part), _digest(secret)
    except ValueError:
        return None


async def verify_api_key(conn: psycopg.AsyncConnection, raw: str) -> uuid.UUID | None:
    """The key's user, or None for anything malformed, unknown or wrong."""
    parsed = parse_api_key(raw)
    if parsed is None:
        return None
    key_id, digest = parsed
    cur = await conn.execute(
        "SELECT user_id, key_hash, last_used_at > now() - interval '5 minutes' FROM api_keys WHERE id = %s",
        (key_id,),
    )
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[1]), digest):
        return None
    if not row[2]:  # record use at most every few minutes: no write on every request
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
    user_id: uuid.UUID = row[0]
    return user_id


async def list_api_keys(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id AS key_id, name, description, created_at AS updated_at, last_used_at
               FROM api_keys WHERE user_id = %s ORDER BY created_at""",
            (user_id,),
        )
        return await cur.fetchall()


async def delete_api_key(conn: psycopg.AsyncConnection, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM api_keys WHERE id = %s AND user_id = %s", (key_id, user_id))
    return cur.rowcount > 0
