"""``/v3/users``: registration, log-in, tokens, the caller's profile and API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Form

from ragkeep.api.deps import PrincipalDep, ServicesDep, optional_principal
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import (
    ApiKeyCreate,
    ApiKeyInfo,
    ApiKeyOut,
    GenericBoolean,
    Results,
    Token,
    TokenPairOut,
    UserCreate,
    UserOut,
)
from ragkeep.auth import api_keys, users
from ragkeep.auth.tokens import InvalidToken, TokenPair
from ragkeep.auth.users import EmailTaken, Principal, User

router = APIRouter(prefix="/v3/users", tags=["users"])


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        created_at=user.created_at,
        updated_at=user.updated_at,
        is_verified=user.is_verified,
        collection_ids=user.collection_ids,
        limits_overrides=user.limits_overrides,
        name=user.name,
        bio=user.bio,
        profile_picture=user.profile_picture,
    )


def _pair_out(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=Token(token=pair.access_token, token_type="access"),
        refresh_token=Token(token=pair.refresh_token, token_type="refresh"),
    )


def _require_self_or_superuser(principal: Principal, user_id: uuid.UUID) -> None:
    if principal.id != user_id and not principal.is_superuser:
        raise ApiError(403, "you may only act on your own account")


@router.post("", response_model=Results[UserOut], status_code=201)
async def register(
    body: UserCreate, services: ServicesDep, caller: Annotated[Principal | None, Depends(optional_principal)]
) -> Results[UserOut]:
    if not services.settings.auth.allow_registration:
        if caller is None or not caller.is_superuser:
            raise ApiError(403, "self-registration is disabled; ask a superuser to create your account")
    async with services.db.pool.connection() as conn:
        try:
            user = await users.create_user(
                conn, body.email, body.password, name=body.name, bio=body.bio, profile_picture=body.profile_picture
            )
        except EmailTaken:
            raise ApiError(409, f"a user with email {body.email} already exists") from None
    return Results(results=user_out(user))


@router.post("/login", response_model=Results[TokenPairOut])
async def login(
    services: ServicesDep, username: Annotated[str, Form()], password: Annotated[str, Form()]
) -> Results[TokenPairOut]:
    async with services.db.pool.connection() as conn:
        user = await users.authenticate(conn, username, password)
    if user is None:
        raise ApiError(401, "incorrect email or password")
    return Results(results=_pair_out(services.tokens.pair(user.id)))


@router.post("/refresh-token", response_model=Results[TokenPairOut])
async def refresh_token(
    services: ServicesDep, refresh_token: Annotated[str, Body(min_length=1, max_length=4096)]
) -> Results[TokenPairOut]:
    try:
        user_id, _ = services.tokens.decode(refresh_token, "refresh")
    except InvalidToken as e:
        raise ApiError(401, str(e)) from e
    async with services.db.pool.connection() as conn:
        if await users.load_principal(conn, user_id) is None:
            raise ApiError(401, "the user of this token no longer exists or is inactive")
    return Results(results=_pair_out(services.tokens.pair(user_id)))


@router.get("/me", response_model=Results[UserOut])
async def me(principal: PrincipalDep, services: ServicesDep) -> Results[UserOut]:
    async with services.db.pool.connection() as conn:
        user = await users.get_user(conn, principal.id)
    assert user is not None
    return Results(results=user_out(user))


@router.get("/{user_id}", response_model=Results[UserOut])
async def get_user(user_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep) -> Results[UserOut]:
    _require_self_or_superuser(principal, user_id)
    async with services.db.pool.connection() as conn:
        user = await users.get_user(conn, user_id)
    if user is None:
        raise ApiError(404, f"user {user_id} not found")
    return Results(results=user_out(user))


@router.post("/{user_id}/api-keys", response_model=Results[ApiKeyOut])
async def create_api_key(
    user_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep, body: ApiKeyCreate | None = None
) -> Results[ApiKeyOut]:
    _require_self_or_superuser(principal, user_id)
    body = body or ApiKeyCreate()
    async with services.db.pool.connection() as conn:
        if await users.get_user(conn, user_id) is None:
            raise ApiError(404, f"user {user_id} not found")
        key_id, raw = await api_keys.create_api_key(conn, user_id, body.name, body.description)
    public = raw.split(".", 1)[0]
    return Results(results=ApiKeyOut(public_key=public, api_key=raw, key_id=str(key_id), name=body.name))


@router.get("/{user_id}/api-keys", response_model=Results[list[ApiKeyInfo]])
async def list_api_keys(user_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep) -> Results[list[ApiKeyInfo]]:
    _require_self_or_superuser(principal, user_id)
    async with services.db.pool.connection() as conn:
        rows = await api_keys.list_api_keys(conn, user_id)
    return Results(
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
    user_id: uuid.UUID, key_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep
) -> Results[GenericBoolean]:
    _require_self_or_superuser(principal, user_id)
    async with services.db.pool.connection() as conn:
        if not await api_keys.delete_api_key(conn, user_id, key_id):
            raise ApiError(404, f"API key {key_id} not found")
    return Results(results=GenericBoolean(success=True))
