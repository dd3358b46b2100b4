"""Access and refresh tokens: HS256 JWTs whose secret lives in the database.

Keeping the secret in PostgreSQL (unless one is configured) lets every replica that serves a
database accept the tokens any other replica issued, with nothing to distribute by hand.

Revocation lives in PostgreSQL too (``revoked_tokens``, keyed by the token's ``jti``): log-out
revokes the presented access token, and a refresh token is revoked when it is exchanged, so each
one works once. A revoked row is kept only until the token would have expired anyway.

Every token also carries its user's ``token_generation`` (claim ``gen``) at issue: changing the
password adds one to it, which ends every token issued before in one step (``users.set_password``).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
import psycopg

from ragkeep.errors import InternalError, Unauthorized

TokenType = Literal["access", "refresh"]
ALGORITHM = "HS256"

#: Replicas' clocks differ a little: keep revocations this long past the token's expiry.
CLOCK_SKEW = timedelta(minutes=5)
#: Expired revocations pruned per revocation: bounded work on the request that pays for it.
PRUNE_BATCH = 500


class InvalidToken(Unauthorized):
    """A token that is malformed, expired, of the wrong kind or not ours; the message says which."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str


class TokenSubject(uuid.UUID):
    """The user id a token names, carrying the token's own id (``jti``) and expiry.

    It is a ``UUID`` (equal to and hashing like the plain user id), so callers that only want the
    user keep working; :func:`ragkeep.auth.users.load_principal` reads ``token_id`` from it to refuse
    a revoked token in the same query that loads the caller.
    """

    __slots__ = ("expires_at", "generation", "token_id")
    token_id: str
    expires_at: datetime
    generation: int

    def __init__(self, user_id: uuid.UUID, token_id: str, expires_at: datetime, generation: int = 0) -> None:
        super().__init__(int=user_id.int)
        object.__setattr__(self, "token_id", token_id)
        object.__setattr__(self, "expires_at", expires_at)
        object.__setattr__(self, "generation", generation)


class TokenIssuer:
    def __init__(self, secret: str, access_minutes: int, refresh_days: int) -> None:
        self._secret = secret
        self._lifetimes = {"access": timedelta(minutes=access_minutes), "refresh": timedelta(days=refresh_days)}

    def issue(
        self,
        user_id: uuid.UUID,
        kind: TokenType,
        *,
        password_changed_at: datetime | None = None,
        generation: int = 0,
    ) -> str:
        """A signed token. ``generation`` (the user's ``token_generation``) goes in as ``gen``: the
        token works while the user's is still the same. ``password_changed_at`` (the user's, when
        they have changed it) goes into refresh tokens as ``pwd`` (the check that came before
        ``gen``, kept for refresh tokens issued before it): both are exact comparisons, no clocks."""
        now = datetime.now(UTC)
        claims: dict[str, object] = {
            "sub": str(user_id),
            "type": kind,
            "iat": now,
            "exp": now + self._lifetimes[kind],
            "jti": secrets.token_hex(16),
            "gen": generation,
        }
        if kind == "refresh" and password_changed_at is not None:
            claims["pwd"] = password_stamp(password_changed_at)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def pair(
        self, user_id: uuid.UUID, *, password_changed_at: datetime | None = None, generation: int = 0
    ) -> TokenPair:
        return TokenPair(
            self.issue(user_id, "access", generation=generation),
            self.issue(user_id, "refresh", password_changed_at=password_changed_at, generation=generation),
        )

    def decode(self, token: str, kind: TokenType) -> tuple[TokenSubject, dict[str, Any]]:
        """The token's subject (a user id that knows its token's jti) and claims, or InvalidToken.

        This checks the signature, expiry and type only; whether the token was revoked is a
        database question, answered by ``load_principal`` (access) or ``consume`` (refresh)."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "jti"]}
            )
        except jwt.ExpiredSignatureError as e:
            raise InvalidToken("token has expired; log in again or refresh it") from e
        except jwt.PyJWTError as e:
            raise InvalidToken("invalid token") from e
        if claims.get("type") != kind:
            raise InvalidToken(f"expected a {kind} token")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 64:
            raise InvalidToken("invalid token id")
        generation = claims.get("gen", 0)  # tokens issued before generations existed have none
        if isinstance(generation, bool) or not isinstance(generation, int) or not 0 <= generation < 2**31:
            raise InvalidToken("invalid token generation")
        try:
            user_id = uuid.UUID(claims["sub"])
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        except (ValueError, TypeError, OverflowError) as e:
            raise InvalidToken("invalid token claims") from e
        return TokenSubject(user_id, jti, expires_at, generation), claims


def password_stamp(password_changed_at: datetime | None) -> str | None:
    """What a refresh token records of the password it was issued under (None: never changed)."""
    return password_changed_at.astimezone(UTC).isoformat() if password_changed_at is not None else None


def issued_under_current_password(
    claims: dict[str, Any], password_changed_at: datetime | None, generation: int = 0
) -> bool:
    """Whether no password change (nor anything else that ends sessions) came after the token."""
    return claims.get("pwd") == password_stamp(password_changed_at) and claims.get("gen", 0) == generation


async def revoke(conn: psycopg.AsyncConnection, subject: TokenSubject) -> bool:
    """Revoke one token until it expires; False if it was revoked already.

    ``INSERT .. ON CONFLICT DO NOTHING`` makes this the single-use check for refresh tokens too:
    of two requests racing with the same token, exactly one inserts the row."""
    cur = await conn.execute(
        """INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (%s, %s, %s)
           ON CONFLICT (jti) DO NOTHING""",
        (subject.token_id, uuid.UUID(int=subject.int), subject.expires_at + CLOCK_SKEW),
    )
    revoked = cur.rowcount == 1
    await prune_revoked(conn)
    return revoked


async def prune_revoked(conn: psycopg.AsyncConnection, batch: int = PRUNE_BATCH) -> int:
    """Forget revocations of tokens that have expired since: they are refused as expired anyway.

    SKIP LOCKED keeps replicas that prune at the same moment from waiting on each other."""
    cur = await conn.execute(
        """DELETE FROM revoked_tokens WHERE jti IN (
               SELECT jti FROM revoked_tokens WHERE expires_at < now()
               ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)""",
        (batch,),
    )
    return cur.rowcount


async def load_or_create_secret(conn: psycopg.AsyncConnection) -> str:
    """The shared secret: created once by whichever replica asks first, then read by all."""
    await conn.execute(
        "INSERT INTO ragkeep_meta (key, value) VALUES ('jwt_secret', %s) ON CONFLICT (key) DO NOTHING",
        (secrets.token_urlsafe(48),),
    )
    cur = await conn.execute("SELECT value FROM ragkeep_meta WHERE key = 'jwt_secret'")
    row = await cur.fetchone()
    if row is None:  # inserted just above unless it was there; never deleted
        raise InternalError("ragkeep_meta has no jwt_secret after inserting it")
    secret: str = row[0]
    return secret
