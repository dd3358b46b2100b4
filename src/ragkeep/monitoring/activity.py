"""Request activity: every HTTP request counted per hour and route, and per hour and user.

A pure ASGI middleware (:mod:`.middleware`) times each request, updates this process's Prometheus metrics at once,
and adds the request to in-memory cells that are flushed to ``request_activity`` and
``user_activity`` every few seconds (upserts that add up, so replicas sum on the same rows, as
:mod:`.searches` does). A request never waits for these writes.

Who made a request is read from its credentials without a database round trip: the user id of a
bearer token whose signature checks out, or the id and secret hash of an ``X-API-Key``, which the
flush resolves to its user with a join on ``api_keys`` (a wrong secret matches nothing). A request
answered 401 is nobody's. This keeps request authentication (``api/deps.py``) untouched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from ragkeep.auth.api_keys import parse_api_key
from ragkeep.monitoring.prom import METHODS, status_class
from ragkeep.monitoring.searches import LATENCY_BOUNDS_MS, latency_bucket

if TYPE_CHECKING:
    from ragkeep.auth.tokens import TokenIssuer


#: The route of a request that matched none (scanners, typos): one row, not one per path.
UNMATCHED = "(unmatched)"

_REQUESTS_UPSERT = """
INSERT INTO request_activity AS a (hour, method, route, status_class, requests, total_ms, max_ms, latency_hist)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (hour, method, route, status_class) DO UPDATE SET
    requests = a.requests + excluded.requests,
    total_ms = a.total_ms + excluded.total_ms,
    max_ms = greatest(a.max_ms, excluded.max_ms),
    latency_hist = ragkeep_hist_add(a.latency_hist, excluded.latency_hist)
"""
# API keys resolve to their user here; grouping merges a user seen through a token and a key.
_USERS_UPSERT = """
INSERT INTO user_activity AS a (hour, user_id, requests, errors)
SELECT t.hour, coalesce(t.user_id, k.user_id), sum(t.requests), sum(t.errors)
FROM unnest(%s::timestamptz[], %s::uuid[], %s::uuid[], %s::bytea[], %s::bigint[], %s::bigint[])
     AS t(hour, user_id, key_id, key_hash, requests, errors)
LEFT JOIN api_keys k ON k.id = t.key_id AND k.key_hash = t.key_hash
WHERE coalesce(t.user_id, k.user_id) IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (hour, user_id) DO UPDATE SET
    requests = a.requests + excluded.requests,
    errors = a.errors + excluded.errors
"""


@dataclass
class _RouteCell:
    requests: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))


@dataclass
class _UserCell:
    requests: int = 0
    errors: int = 0


_RouteKey = tuple[datetime, str, str, str]
#: Where the route's auth dependency leaves the verified caller's id (in ``scope["state"]``, i.e.
#: ``request.state``), so the middleware need not decode the token or look up the key again.
PRINCIPAL_STATE_KEY = "ragkeep_principal_id"

#: (hour, user id from a token, API key id, SHA-256 of the key's secret)
_UserKey = tuple[datetime, uuid.UUID | None, uuid.UUID | None, bytes | None]


@dataclass(frozen=True)
class Caller:
    """Who a request claims to be; ``user_id`` is checked (token signature), a key at the flush."""

    user_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    key_hash: bytes | None = None


def caller_from_headers(headers: dict[str, str], tokens: TokenIssuer | None) -> Caller | None:
    """The caller of a request from its ``Authorization`` / ``X-API-Key`` headers, or None."""
    raw_key = headers.get("x-api-key")
    if raw_key:
        parsed = parse_api_key(raw_key)
        return None if parsed is None else Caller(key_id=parsed[0], key_hash=parsed[1])
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token or tokens is None:
        return None
    from ragkeep.auth.tokens import InvalidToken

    try:
        subject, _ = tokens.decode(token.strip(), "access")
    except InvalidToken:
        return None
    return Caller(user_id=uuid.UUID(int=subject.int))  # a plain UUID: TokenSubject carries the jti


class ActivityRecorder:
    """In-memory request counts of this process, written to PostgreSQL by :meth:`flush`."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._routes: dict[_RouteKey, _RouteCell] = {}
        self._users: dict[_UserKey, _UserCell] = {}

    def record(
        self, *, method: str, route: str, status: int, ms: float, caller: Caller | None, at: datetime | None = None
    ) -> None:
        hour = (at or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
        method = method if method in METHODS else "OTHER"
        cell = self._routes.setdefault((hour, method, route, status_class(status)), _RouteCell())
        cell.requests += 1
        cell.total_ms += ms
        cell.max_ms = max(cell.max_ms, ms)
        cell.hist[latency_bucket(ms)] += 1
        if caller is not None and status != 401:
            user = self._users.setdefault((hour, caller.user_id, caller.key_id, caller.key_hash), _UserCell())
            user.requests += 1
            user.errors += int(status >= 400)

    async def flush(self) -> tuple[int, int]:
        """Write what was recorded since the last flush: (route rows, user rows) sent.

        On failure the figures are merged back for the next flush."""
        routes, self._routes = self._routes, {}
        users, self._users = self._users, {}
        if not routes and not users:
            return 0, 0
        route_rows = [
            (*key, c.requests, c.total_ms, c.max_ms, c.hist) for key, c in sorted(routes.items(), key=lambda kv: kv[0])
        ]
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for (hour, user_id, key_id, key_hash), c in users.items():
            for col, value in zip(columns, (hour, user_id, key_id, key_hash, c.requests, c.errors), strict=True):
                col.append(value)
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if route_rows:
                    await cur.executemany(_REQUESTS_UPSERT, route_rows)
                if users:
                    await cur.execute(_USERS_UPSERT, columns)
        except BaseException:
            self._merge_back(routes, users)
            raise
        return len(route_rows), len(users)

    def _merge_back(self, routes: dict[_RouteKey, _RouteCell], users: dict[_UserKey, _UserCell]) -> None:
        for key, c in routes.items():
            cur = self._routes.setdefault(key, _RouteCell())
            cur.requests += c.requests
            cur.total_ms += c.total_ms
            cur.max_ms = max(cur.max_ms, c.max_ms)
            cur.hist = [a + b for a, b in zip(cur.hist, c.hist, strict=True)]
        for ukey, u in users.items():
            mine = self._users.setdefault(ukey, _UserCell())
            mine.requests += u.requests
            mine.errors += u.errors
