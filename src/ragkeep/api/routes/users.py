"""``/v3/users``: registration, log-in, tokens, profiles, administration, API keys and limits.

A user's collections (``/v3/users/{id}/collections``) are served by ``routes.collections``.
Log-in and token refresh are on ``public_router``, which is not rate limited: they have no
caller to count, and a stale token still sent with them must not stop them (see app.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ragkeep.api.deps import DbDep, Limit, Offset, PrincipalDep, ServicesDep, SuperuserDep, optional_principal
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import (
    ApiKeyCreate,
    ApiKeyInfo,
    ApiKeyOut,
    GenericBoolean,
    GenericMessage,
    LimitsOut,
    PaginatedResults,
    PasswordChange,
    RateLimitsOut,
    RateUsage,
    Results,
    RouteUsage,
    StorageLimitsOut,
    Token,
    TokenPairOut,
    UsageLimit,
    UserCreate,
    UserDelete,
    UserOut,
    UserUpdate,
    user_out,
)
from ragkeep.auth import api_keys, throttle, tokens, users
from ragkeep.auth.tokens import InvalidToken, TokenPair
from ragkeep.auth.users import EmailTaken, LastSuperuser, Principal
from ragkeep.db.shared import SharedConnection
from ragkeep.limits import rates, storage
from ragkeep.text import text_problem

router = APIRouter(prefix="/v3/users", tags=["users"], route_class=GuardedRoute)
#: Routes without a caller; included before ``router``, whose ``POST /{user_id}`` would take "/login".
public_router = APIRouter(prefix="/v3/users", tags=["users"], route_class=GuardedRoute)

_bearer = HTTPBearer(auto_error=False)


def _pair_out(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=Token(token=pair.access_token, token_type="access"),
        refresh_token=Token(token=pair.refresh_token, token_type="refresh"),
    )


def _require_self_or_superuser(principal: Principal, user_id: uuid.UUID) -> None:
    if principal.id != user_id and not principal.is_superuser:
        raise ApiError(403, "you may only act on your own account")


def _check_routes(request: Request, routes: dict[str, Any]) -> None:
    """A route override must name a route template the API has, or it would never apply."""
    known = set(request.app.openapi().get("paths", {}))
    for route in routes:
        if route not in known:
            raise ApiError(
                422,
                f"limits_overrides.route_overrides: no route {route[:200]!r}; give a route template as in "
                "the API's paths, e.g. /v3/retrieval/search or /v3/documents/{document_id}",
            )


def _usage(limit: int, used: int) -> UsageLimit:
    return UsageLimit(used=used, limit=limit, remaining=max(limit - used, 0))


# -- registration, log-in and tokens ----------------------------------------------------------


@router.post("", response_model=Results[UserOut], status_code=201)
async def register(
    body: UserCreate,
    services: ServicesDep,
    db: DbDep,
    caller: Annotated[Principal | None, Depends(optional_principal)],
) -> Results[UserOut]:
    if not services.settings.auth.allow_registration and (caller is None or not caller.is_superuser):
        raise ApiError(403, "self-registration is disabled; ask a superuser to create your account")
    async with db.connection() as conn:
        try:
            user = await users.create_user(
                conn, body.email, body.password, name=body.name, bio=body.bio, profile_picture=body.profile_picture
            )
        except EmailTaken:
            raise ApiError(409, f"a user with email {body.email} already exists") from None
    return Results(results=user_out(user))


@router.get("", response_model=PaginatedResults[list[UserOut]])
async def list_users(
    principal: SuperuserDep,
    db: DbDep,
    ids: Annotated[list[uuid.UUID] | None, Query()] = None,
    email: Annotated[list[str] | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> PaginatedResults[list[UserOut]]:
    """Every user, by email (superusers only); ``ids`` and ``email`` (exact, any case) filter."""
    for e in email or []:
        if len(e) > 320:
            raise ApiError(422, "email: longer than 320 characters")
        if problem := text_problem(e):
            raise ApiError(422, f"email: {problem}")
    async with db.connection() as conn:
        rows, total = await users.list_users(conn, ids=ids, emails=email, offset=offset, limit=limit)
    return PaginatedResults(results=[user_out(u, usage) for u, usage in rows], total_entries=total)


def client_address(request: Request) -> str:
    """The caller's address: uvicorn has already replaced a trusted proxy's with the client's from
    ``X-Forwarded-For`` (its ``FORWARDED_ALLOW_IPS``, 127.0.0.1 and ::1 unless set)."""
    return request.client.host if request.client else "unknown"


#: Documented for OpenAPI readers (and schema checkers): the throttle's answer.
_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many failed log-ins: retry after the Retry-After header's seconds"}
}


@public_router.post("/login", response_model=Results[TokenPairOut], responses=_THROTTLED)
async def login(
    request: Request,
    services: ServicesDep,
    db: DbDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Results[TokenPairOut]:
    """Tokens for an email and password. Failed log-ins are throttled (``ragkeep.auth.throttle``):
    past a limit the answer is 429 with ``Retry-After``, before the password is even checked."""
    attempt = throttle.Attempt.of(username, client_address(request))
    async with db.connection() as conn:
        await throttle.begin(conn, services.settings.auth, attempt)
        found = await users.get_user_by_email(conn, username)
    await db.release()
    user = await users.verify_user(found, password)  # no connection held while argon2 runs
    async with db.connection() as conn:
        if user is None:
            await throttle.prune(conn)
            raise ApiError(401, "incorrect email or password")
        await throttle.succeeded(conn, attempt)
    pair = services.tokens.pair(
        user.id, password_changed_at=user.password_changed_at, generation=user.token_generation
    )
    return Results(results=_pair_out(pair))


async def _password_is_right(
    request: Request, services: ServicesDep, db: SharedConnection, principal: Principal, password: str
) -> bool:
    """Check an authenticated caller's own password, throttled as their log-ins are: a stolen token
    must not become a way to guess the password."""
    attempt = throttle.Attempt.of(principal.email, client_address(request))
    async with db.connection() as conn:
        await throttle.begin(conn, services.settings.auth, attempt)
        ok = await users.check_password(conn, principal.id, password)
        if ok:
            await throttle.succeeded(conn, attempt)
    return ok


@public_router.post("/refresh-token", response_model=Results[TokenPairOut])
async def refresh_token(
    services: ServicesDep, db: DbDep, refresh_token: Annotated[str, Body(min_length=1, max_length=4096)]
) -> Results[TokenPairOut]:
    """A new token pair for a refresh token, which is used up: each one works once (as R2R).

    Log-out does not end the refresh token (as R2R); changing the password does."""
    try:
        subject, claims = services.tokens.decode(refresh_token, "refresh")
    except InvalidToken as e:
        raise ApiError(401, str(e)) from e
    async with db.connection() as conn:
        user = await users.get_user(conn, subject)
        if user is None or not user.is_active:
            raise ApiError(401, "the user of this token no longer exists or is inactive")
        if not tokens.issued_under_current_password(claims, user.password_changed_at, user.token_generation):
            raise ApiError(401, "the password was changed after this token was issued; log in again")
        if not await tokens.revoke(conn, subject):
            raise ApiError(401, "this refresh token was already used; log in again")
    pair = services.tokens.pair(
        user.id, password_changed_at=user.password_changed_at, generation=user.token_generation
    )
    return Results(results=_pair_out(pair))


@router.post("/logout", response_model=Results[GenericMessage])
async def logout(
    principal: PrincipalDep,
    services: ServicesDep,
    db: DbDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Results[GenericMessage]:
    """Revoke the access token this request carries, on every replica, until it expires."""
    if bearer is None:
        raise ApiError(
            400,
            "logout revokes the bearer access token it is sent with; "
            "an API key is revoked with DELETE /v3/users/{id}/api-keys/{key_id}",
        )
    try:
        subject, _ = services.tokens.decode(bearer.credentials, "access")
    except InvalidToken as e:
        raise ApiError(401, str(e)) from e
    if subject != principal.id:
        raise ApiError(400, "the bearer token and the API key sent belong to different users")
    async with db.connection() as conn:
        await tokens.revoke(conn, subject)
    return Results(results=GenericMessage(message="Logged out successfully"))


@router.post("/change-password", response_model=Results[GenericMessage], responses=_THROTTLED)
async def change_password(
    body: PasswordChange,
    principal: PrincipalDep,
    services: ServicesDep,
    db: DbDep,
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Results[GenericMessage]:
    """Needs the current password. Every session of the user ends, on every replica: all access
    and refresh tokens issued before, except the access token this request carries (unless
    ``keep_current_session`` is false), so a client that changes its password carries on as with
    R2R; its refresh token ends too, so it logs in again once that access token expires."""
    keep: str | None = None
    if bearer is not None and body.keep_current_session:
        try:
            subject, _ = services.tokens.decode(bearer.credentials, "access")
        except InvalidToken:
            subject = None  # authenticated by an API key sent alongside: no session to keep
        if subject is not None and subject == principal.id:
            keep = subject.token_id
    if not await _password_is_right(request, services, db, principal, body.current_password):
        raise ApiError(400, "current_password: incorrect password")
    async with db.connection() as conn:
        await users.set_password(conn, principal.id, body.new_password, keep_token_id=keep)
    return Results(results=GenericMessage(message="Password changed successfully"))


# -- profiles ---------------------------------------------------------------------------------


@router.get("/me", response_model=Results[UserOut])
async def me(principal: PrincipalDep, db: DbDep) -> Results[UserOut]:
    async with db.connection() as conn:
        user = await users.get_user(conn, principal.id)
    if user is None:  # deleted since its credentials were checked
        raise ApiError(404, f"user {principal.id} not found")
    return Results(results=user_out(user))


@router.get("/{user_id}", response_model=Results[UserOut])
async def get_user(user_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> Results[UserOut]:
    _require_self_or_superuser(principal, user_id)
    async with db.connection() as conn:
        user = await users.get_user(conn, user_id)
    if user is None:
        raise ApiError(404, f"user {user_id} not found")
    return Results(results=user_out(user))


@router.post("/{user_id}", response_model=Results[UserOut])
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, principal: PrincipalDep, db: DbDep, request: Request
) -> Results[UserOut]:
    """Users update their own profile; superusers anyone's, and only they change ``is_superuser``
    and ``limits_overrides``."""
    if body.is_superuser is not None and not principal.is_superuser:
        raise ApiError(403, "is_superuser: only a superuser may promote or demote users")
    if body.limits_overrides is not None and not principal.is_superuser:
        raise ApiError(403, "limits_overrides: only a superuser may change limits")
    _require_self_or_superuser(principal, user_id)
    if body.limits_overrides:
        _check_routes(request, body.limits_overrides.get("route_overrides") or {})
    changes = {
        k: v
        for k, v in body.model_dump(include=set(users.UPDATABLE)).items()
        if v is not None
    }
    async with db.connection() as conn:
        try:
            user = await users.update_user(conn, user_id, changes, body.metadata)
        except EmailTaken:
            raise ApiError(409, f"email: a user with email {body.email} already exists") from None
        except LastSuperuser:
            raise ApiError(409, "is_superuser: this is the last active superuser; promote another first") from None
    if user is None:
        raise ApiError(404, f"user {user_id} not found")
    return Results(results=user_out(user))


@router.delete("/{user_id}", response_model=Results[GenericBoolean])
async def delete_user(
    user_id: uuid.UUID,
    principal: PrincipalDep,
    services: ServicesDep,
    db: DbDep,
    request: Request,
    body: UserDelete | None = None,
) -> Results[GenericBoolean]:
    """Delete an account with its documents, chunks, API keys and the collections it owns.

    Your own account needs your password (as R2R; a superuser too); a superuser deletes others' without."""
    _require_self_or_superuser(principal, user_id)
    body = body or UserDelete()
    if user_id == principal.id:
        if not body.password:
            raise ApiError(422, "password: required to delete your own account")
        if not await _password_is_right(request, services, db, principal, body.password):
            raise ApiError(400, "password: incorrect password")
    async with db.connection() as conn:
        try:
            deleted = await users.delete_user(conn, user_id)
        except LastSuperuser:
            raise ApiError(409, "this is the last active superuser; promote another before deleting it") from None
    if not deleted:
        raise ApiError(404, f"user {user_id} not found")
    return Results(results=GenericBoolean(success=True))


@router.get("/{user_id}/limits", response_model=Results[LimitsOut])
async def get_limits(
    user_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep, db: DbDep
) -> Results[LimitsOut]:
    """R2R's limits report: what the user stores against their storage limits, and their requests
    this minute and month against their rate limits (the user themself, or a superuser).

    ``effective_limits.route_per_min`` is the default for routes without limits of their own;
    ``usage.routes`` lists the routes that have them. A route without a per-minute limit of its
    own reports the global one (which bounds it), and likewise for the month."""
    _require_self_or_superuser(principal, user_id)
    config = services.settings.limits
    async with db.connection() as conn:
        user = await users.get_user(conn, user_id)
        if user is None:
            raise ApiError(404, f"user {user_id} not found")
        used = await users.usage_counts(conn, user_id)
        requests = await rates.current_usage(conn, user_id)
    overrides = user.limits_overrides or {}
    quota = storage.storage_limits(config, overrides)
    defaults = rates.rate_limits(config, None, "")
    effective = rates.rate_limits(config, overrides, "")
    routes = {}
    for route in rates.limited_routes(config, overrides):
        mine = rates.rate_limits(config, overrides, route)
        routes[route] = RouteUsage(
            route_per_min=_usage(mine.route_per_min or mine.global_per_min, requests.get(("minute", route), 0)),
            monthly_limit=_usage(mine.route_monthly or mine.monthly_limit, requests.get(("month", route), 0)),
        )
    every = rates.ALL_ROUTES
    return Results(
        results=LimitsOut(
            storage_limits=StorageLimitsOut(
                documents=_usage(quota.documents, used["documents"]),
                chunks=_usage(quota.chunks, used["chunks"]),
                collections=_usage(quota.collections, used["collections"]),
            ),
            system_defaults=RateLimitsOut(
                global_per_min=defaults.global_per_min,
                route_per_min=defaults.route_per_min,
                monthly_limit=defaults.monthly_limit,
            ),
            user_overrides=overrides,
            effective_limits=RateLimitsOut(
                global_per_min=effective.global_per_min,
                route_per_min=effective.route_per_min,
                monthly_limit=effective.monthly_limit,
            ),
            usage=RateUsage(
                global_per_min=_usage(effective.global_per_min, requests.get(("minute", every), 0)),
                monthly_limit=_usage(effective.monthly_limit, requests.get(("month", every), 0)),
                routes=routes,
            ),
        )
    )


# -- API keys ---------------------------------------------------------------------------------


@router.post("/{user_id}/api-keys", response_model=Results[ApiKeyOut])
async def create_api_key(
    user_id: uuid.UUID, principal: PrincipalDep, db: DbDep, body: ApiKeyCreate | None = None
) -> Results[ApiKeyOut]:
    _require_self_or_superuser(principal, user_id)
    body = body or ApiKeyCreate()
    async with db.connection() as conn:
        if await users.get_user(conn, user_id) is None:
            raise ApiError(404, f"user {user_id} not found")
        key_id, raw = await api_keys.create_api_key(conn, user_id, body.name, body.description)
    public = raw.split(".", 1)[0]
    return Results(results=ApiKeyOut(public_key=public, api_key=raw, key_id=str(key_id), name=body.name))


@router.get("/{user_id}/api-keys", response_model=PaginatedResults[list[ApiKeyInfo]])
async def list_api_keys(
    user_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> PaginatedResults[list[ApiKeyInfo]]:
    _require_self_or_superuser(principal, user_id)
    async with db.connection() as conn:
        rows = await api_keys.list_api_keys(conn, user_id)
    return PaginatedResults(
        total_entries=len(rows),
        results=[
            ApiKeyInfo(
                public_key=f"{api_keys.PREFIX}{r['key_id'].hex}",
                key_id=str(r["key_id"]),
                name=r["name"],
                description=r["description"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]
    )


@router.delete("/{user_id}/api-keys/{key_id}", response_model=Results[GenericBoolean])
async def delete_api_key(
    user_id: uuid.UUID, key_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    _require_self_or_superuser(principal, user_id)
    async with db.connection() as conn:
        if not await api_keys.delete_api_key(conn, user_id, key_id):
            raise ApiError(404, f"API key {key_id} not found")
    return Results(results=GenericBoolean(success=True))
