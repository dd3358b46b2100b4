"""Request rate limits per user, counted in PostgreSQL so that every replica shares them.

Each authenticated request adds one to four counters of its user (``rate_counters``): this UTC
minute over all routes (``global_per_min``) and on its route (``route_per_min``), this UTC month
over all routes (``monthly_limit``) and on its route (a route's own ``monthly_limit``). One upsert
does it and returns the new counts; when one passes its limit the transaction is rolled back, so
a refused request counts for nothing, and the answer is a 429 with ``Retry-After`` (seconds to
the next window). The counter rows are locked until commit, so concurrent requests of one user,
on any replica, are counted one after the other: exactly ``limit`` requests pass per window.

Windows are fixed (clock minutes and calendar months of the database's clock), so a client may
make up to twice a per-minute limit across a minute boundary. Routes are counted by their
template (``/v3/documents/{id}``): a route limit is per kind of request, not per document.

Requests without credentials (log-in, token refresh, registration, health) are not counted.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from ragkeep.api.deps import DbDep, ServicesDep, optional_principal
from ragkeep.auth.limits import LimitExceeded, override
from ragkeep.auth.users import Principal
from ragkeep.config import LimitsConfig

log = logging.getLogger(__name__)

#: The route of the counters over every route.
ALL_ROUTES = ""
#: Old windows are deleted at most this often by each replica (the DELETE is idempotent).
CLEANUP_EVERY_SECONDS = 60.0

# The four counters of one request in one statement, locked in the same order by every request
# (the all-routes minute first), so concurrent requests of one user queue instead of deadlocking.
# Commit does not wait for the WAL flush (counters are not worth an fsync per request; a crash
# loses at most the last fraction of a second of counts).
_HIT = """
WITH w AS (
    SELECT date_trunc('minute', now()) AS minute,
           date_trunc('month', now(), 'UTC') AS month,
           extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now()) AS minute_left,
           extract(epoch FROM date_trunc('month', now(), 'UTC') + interval '1 month' - now()) AS month_left,
           set_config('synchronous_commit', 'off', true) AS async_commit
), hit AS (
    INSERT INTO rate_counters AS c (user_id, period, route, window_start, count)
    SELECT %(user)s, v.period, v.route, CASE v.period WHEN 'minute' THEN w.minute ELSE w.month END, 1
    FROM w CROSS JOIN (VALUES (1, 'minute', %(all)s), (2, 'minute', %(route)s),
                              (3, 'month', %(all)s), (4, 'month', %(route)s)) AS v(ord, period, route)
    ORDER BY v.ord
    ON CONFLICT (user_id, period, route, window_start) DO UPDATE SET count = c.count + 1
    RETURNING c.period, c.route, c.count
)
SELECT hit.period, hit.route, hit.count, w.minute_left, w.month_left,
       (SELECT coalesce(limits_overrides, '{}') FROM users WHERE id = %(user)s)
FROM hit CROSS JOIN w
"""

_USAGE = """
SELECT period, route, count FROM rate_counters
WHERE user_id = %s
  AND ((period = 'minute' AND window_start = date_trunc('minute', now()))
    OR (period = 'month' AND window_start = date_trunc('month', now(), 'UTC')))
"""

_CLEANUP = """
DELETE FROM rate_counters
WHERE (period = 'minute' AND window_start < date_trunc('minute', now()) - interval '1 minute')
   OR (period = 'month' AND window_start < date_trunc('month', now(), 'UTC') - interval '1 month')
"""


@dataclass(frozen=True)
class RateLimits:
    """The limits of one user on one route; None: that counter is not limited."""

    global_per_min: int
    route_per_min: int | None
    monthly_limit: int
    route_monthly: int | None


def route_overrides(overrides: dict[str, Any] | None, route: str) -> dict[str, Any]:
    value = ((overrides or {}).get("route_overrides") or {}).get(route)
    return value if isinstance(value, dict) else {}


def rate_limits(config: LimitsConfig, overrides: dict[str, Any] | None, route: str) -> RateLimits:
    """R2R's precedence: the user's route override, the configured route limit, then the user's
    and the configured defaults."""
    mine = route_overrides(overrides, route)
    configured = config.route_limits.get(route)

    def first(*values: int | None) -> int | None:
        return next((v for v in values if v is not None), None)

    global_per_min = first(override(overrides, "global_per_min"), config.global_per_min)
    monthly = first(override(overrides, "monthly_limit"), config.monthly_limit)
    assert global_per_min is not None and monthly is not None
    return RateLimits(
        global_per_min=global_per_min,
        route_per_min=first(
            override(mine, "route_per_min"),
            configured.route_per_min if configured else None,
            override(overrides, "route_per_min"),
            config.route_per_min,
        ),
        monthly_limit=monthly,
        route_monthly=first(override(mine, "monthly_limit"), configured.monthly_limit if configured else None),
    )


def limited_routes(config: LimitsConfig, overrides: dict[str, Any] | None) -> list[str]:
    """The routes with limits of their own, configured or in the user's ``route_overrides``."""
    mine = (overrides or {}).get("route_overrides")
    return sorted(set(config.route_limits) | (set(mine) if isinstance(mine, dict) else set()))


def route_key(request: Request) -> str:
    """The matched route's template (R2R counts the path; ids would make each document a route)."""
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or request.url.path


def _refusal(
    counts: dict[tuple[str, str], int], limits: RateLimits, route: str, minute_left: float, month_left: float
) -> LimitExceeded | None:
    checks: Iterable[tuple[int | None, int, str, str, float]] = (
        (limits.global_per_min, counts[("minute", ALL_ROUTES)], "global_per_min", "this minute", minute_left),
        (limits.route_per_min, counts[("minute", route)], "route_per_min", f"this minute on {route}", minute_left),
        (limits.monthly_limit, counts[("month", ALL_ROUTES)], "monthly_limit", "this month", month_left),
        (limits.route_monthly, counts[("month", route)], "monthly_limit", f"this month on {route}", month_left),
    )
    for limit, count, name, window, left in checks:
        if limit is not None and count > limit:
            retry = max(1, math.ceil(left))
            used = count - 1  # this request is not counted
            return LimitExceeded(
                429, name, limit, used,
                f"{name}: you made {used:,} requests {window} and your limit is {limit:,}; retry in {retry} s",
                retry_after=retry,
            )
    return None


async def count_request(
    conn: psycopg.AsyncConnection, config: LimitsConfig, user_id: uuid.UUID, route: str
) -> None:
    """Count one request of ``user_id`` on ``route``, or raise LimitExceeded (429) counting nothing."""
    async with conn.transaction():
        cur = await conn.execute(_HIT, {"user": user_id, "route": route, "all": ALL_ROUTES})
        rows = await cur.fetchall()
        counts = {(r[0], r[1]): int(r[2]) for r in rows}
        minute_left, month_left, overrides = float(rows[0][3]), float(rows[0][4]), rows[0][5]
        refusal = _refusal(counts, rate_limits(config, overrides, route), route, minute_left, month_left)
        if refusal is not None:
            raise refusal  # rolls the counts back


async def current_usage(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> dict[tuple[str, str], int]:
    """``{(period, route): requests}`` in the current minute and month (route "" = all routes)."""
    cur = await conn.execute(_USAGE, (user_id,))
    return {(r[0], r[1]): int(r[2]) for r in await cur.fetchall()}


async def delete_old_windows(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute(_CLEANUP)
    return cur.rowcount


class RateLimiter:
    """Per process: when this replica last deleted old windows."""

    def __init__(self) -> None:
        self._last_cleanup = 0.0

    def cleanup_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_cleanup < CLEANUP_EVERY_SECONDS:
            return False
        self._last_cleanup = now
        return True


async def enforce_rate_limit(
    request: Request,
    services: ServicesDep,
    db: DbDep,
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> None:
    """The router dependency: count the caller's request or refuse it (429).

    It shares the endpoint's ``optional_principal`` (FastAPI solves it once per request) and the
    request's connection."""
    config = services.settings.limits
    if principal is None or (principal.is_superuser and config.superusers_exempt):
        return
    limiter: RateLimiter = request.app.state.rate_limiter
    async with db.connection() as conn:
        await count_request(conn, config, principal.id, route_key(request))
        if limiter.cleanup_due():
            deleted = await delete_old_windows(conn)
            if deleted:
                log.debug("deleted %d old rate-limit windows", deleted)


#: For ``include_router(..., dependencies=RATE_LIMITED)``.
RATE_LIMITED = [Depends(enforce_rate_limit)]


def install(app: FastAPI) -> None:
    """Answer LimitExceeded (from any route or below) in R2R's error shape, with ``Retry-After``
    for rate limits; and keep this process's cleanup clock."""
    app.state.rate_limiter = RateLimiter()

    @app.exception_handler(LimitExceeded)
    async def _limit_exceeded(request: Request, exc: LimitExceeded) -> JSONResponse:
        body = {
            "detail": {
                "message": exc.message,
                "error_type": "LimitExceeded",
                "limit_name": exc.limit_name,
                "limit": exc.limit,
                "used": exc.used,
            }
        }
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return JSONResponse(status_code=exc.status_code, content=body, headers=headers)
