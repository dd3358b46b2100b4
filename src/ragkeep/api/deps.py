"""Request dependencies: the services, the request's database connection, and who is calling
(a bearer JWT or an ``X-API-Key``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ragkeep.api.errors import ApiError
from ragkeep.api.services import Services
from ragkeep.auth.api_keys import verify_api_key
from ragkeep.auth.tokens import InvalidToken
from ragkeep.auth.users import Principal, load_principal
from ragkeep.db.reads import Connects, Reads
from ragkeep.db.shared import SharedConnection
from ragkeep.monitoring.activity import PRINCIPAL_STATE_KEY
from ragkeep.search.scope import Scope

_bearer = HTTPBearer(auto_error=False)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_services(request: Request) -> Services:  # async: no thread hop per request
    services: Services = request.app.state.services  # set by the lifespan (api/app.py)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def request_connection(services: ServicesDep) -> AsyncIterator[SharedConnection]:
    """The request's one pooled connection, shared by the credentials check, the rate limit and
    the route; checked out at first use, returned when the route function ends (``scope="function"``:
    before the response is sent, so a streamed body or a background task does not hold it)."""
    shared = SharedConnection(services.db.pool)
    try:
        yield shared
    finally:
        await shared.release()


DbDep = Annotated[SharedConnection, Depends(request_connection, scope="function")]

#: PostgreSQL's bigint, the widest integer a statement takes (OFFSET, ids): a larger value must be a
#: 422 here, not an "out of range" 500 from the database.
BIGINT_MAX = 2**63 - 1

#: Pagination query parameters, the same on every list route (R2R's bounds, and bigint's).
Offset = Annotated[int, Query(ge=0, le=BIGINT_MAX, description="Rows to skip.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows to return, 1-1000.")]


async def optional_principal(
    request: Request,
    services: ServicesDep,
    db: DbDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    """The caller, None when no credentials were sent; wrong credentials are always a 401 (with
    ``WWW-Authenticate: Bearer``, as every 401: api/errors.py)."""
    if not api_key and bearer is None:
        return None
    token_id: str | None = None
    async with db.connection() as conn:
        if api_key:
            user_id = await verify_api_key(conn, api_key)
            if user_id is None:
                raise ApiError(401, "invalid API key")
        elif bearer is not None:
            try:
                user_id, claims = services.tokens.decode(bearer.credentials, "access")
            except InvalidToken as e:
                raise ApiError(401, str(e)) from e
            token_id = claims["jti"]
        else:  # neither: answered above without a connection
            return None
        principal = await load_principal(conn, user_id, token_id=token_id)
    if principal is None:
        raise ApiError(
            401,
            "these credentials were revoked (logged out, or the password changed since), "
            "or their user is gone or inactive; log in again",
        )
    setattr(request.state, PRINCIPAL_STATE_KEY, principal.id)
    return principal


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise ApiError(401, "authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def superuser(principal: PrincipalDep) -> Principal:
    if not principal.is_superuser:
        raise ApiError(403, "only a superuser may do this")
    return principal


SuperuserDep = Annotated[Principal, Depends(superuser)]


async def read_connections(principal: PrincipalDep, services: ServicesDep, db: DbDep) -> Connects:
    """Where the caller's reads run: a standby that shows their own writes (``read_urls``), else
    the request's connection to the primary."""
    router = services.db.reads
    if router is None or not router.enabled:
        return db
    return Reads(router, db, principal.id)


#: For searches and lists: ``async with reads.connection() as conn`` (db/reads.py).
ReadsDep = Annotated[Connects, Depends(read_connections)]


def scope_of(principal: Principal) -> Scope:
    """The rows ``principal`` may read: everything for a superuser, else their own and their
    collections'."""
    if principal.is_superuser:
        return Scope(owner_id=None)
    return Scope(owner_id=principal.id, collection_ids=principal.collection_ids)


def require_owner(principal: Principal, owner_id: object, what: str, action: str) -> None:
    """Members read, owners change: a 403 for anyone but the row's owner or a superuser."""
    if owner_id != principal.id and not principal.is_superuser:
        raise ApiError(403, f"only the {what}'s owner or a superuser may {action} it")
