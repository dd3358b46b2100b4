"""The router dependency that counts each authenticated request against its user's rate limits.

The counting (SQL, precedence of limits, windows) is :mod:`ragkeep.limits.rates`; a refusal is
RateLimited, which ``api/errors.py`` answers with a 429 and ``Retry-After``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from ragkeep.api.deps import DbDep, ServicesDep, optional_principal
from ragkeep.auth.users import Principal
from ragkeep.limits import rates


def route_key(request: Request) -> str:
    """The matched route's template (R2R counts the path; ids would make each document a route)."""
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or request.url.path


async def enforce_rate_limit(
    request: Request,
    services: ServicesDep,
    db: DbDep,
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> None:
    """Count the caller's request or refuse it (RateLimited).

    It shares the endpoint's ``optional_principal`` (FastAPI solves it once per request) and the
    request's connection."""
    config = services.settings.limits
    if principal is None or (principal.is_superuser and config.superusers_exempt):
        return
    async with db.connection() as conn:
        await rates.count_request(conn, config, principal.id, route_key(request))
        await rates.clean_up_if_due(conn, request.app.state.rate_cleanup)


#: For ``include_router(..., dependencies=RATE_LIMITED)``.
RATE_LIMITED = [Depends(enforce_rate_limit)]


def install(app: FastAPI) -> None:
    """Keep this process's clock for deleting old windows."""
    app.state.rate_cleanup = rates.CleanupClock()
