"""Access and refresh tokens: HS256 JWTs whose secret lives in the database.

Keeping the secret in PostgreSQL (unless one is configured) lets every replica that serves a
database accept the tokens any other replica issued, with nothing to distribute by hand.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
import psycopg

TokenType = Literal["access", "refresh"]
ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str


class TokenIssuer:
    def __init__(self, secret: str, access_minutes: int, refresh_days: int) -> None:
        self._secret = secret
        self._lifetimes = {"access": timedelta(minutes=access_minutes), "refresh": timedelta(days=refresh_days)}

    def issue(self, user_id: uuid.UUID, kind: TokenType) -> str:
        now = datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "type": kind,
            "iat": now,
            "exp": now + self._lifetimes[kind],
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def pair(self, user_id: uuid.UUID) -> TokenPair:
        return TokenPair(self.issue(user_id, "access"), self.issue(user_id, "refresh"))

    def decode(self, token: str, kind: TokenType) -> tuple[uuid.UUID, dict]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError as e:
            raise InvalidToken("token has expired; log in again or refresh it") from e
        except jwt.PyJWTError as e:
            raise InvalidToken("invalid token") from e
        if claims.get("type") != kind:
            raise InvalidToken(f"expected a {kind} token")
        try:
            return uuid.UUID(claims["sub"]), claims
        except ValueError as e:
            raise InvalidToken("invalid token subject") from e


async def load_or_create_secret(conn: psycopg.AsyncConnection) -> str:
    """The shared secret: created once by whichever replica asks first, then read by all."""
    await conn.execute(
        "INSERT INTO ragkeep_meta (key, value) VALUES ('jwt_secret', %s) ON CONFLICT (key) DO NOTHING",
        (secrets.token_urlsafe(48),),
    )
    cur = await conn.execute("SELECT value FROM ragkeep_meta WHERE key = 'jwt_secret'")
    row = await cur.fetchone()
    assert row is not None
    return row[0]
