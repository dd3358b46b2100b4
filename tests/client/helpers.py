"""Helpers for the client tests: clients holding tokens the fixtures already obtained."""

from __future__ import annotations

import uuid

import httpx

from ragkeep import AsyncClient, Client
from ragkeep.auth.tokens import TokenIssuer
from tests.support import TestUser


def expired(secret: str, user_id: uuid.UUID, kind: str) -> str:
    """A token signed with the server's secret whose expiry lies in the past."""
    issuer = TokenIssuer(secret, access_minutes=-5, refresh_days=-1)
    return issuer.issue(user_id, kind)  # type: ignore[arg-type]


def bearer(http: httpx.Client) -> str:
    return http.headers["Authorization"].removeprefix("Bearer ")


def user_client(base_url: str, user: TestUser) -> Client:
    """A client with the token ``make_user`` already obtained (password hashing is slow; log in only to test it)."""
    client = Client(base_url)
    client.access_token = bearer(user.client)
    return client


def async_user_client(base_url: str, user: TestUser) -> AsyncClient:
    client = AsyncClient(base_url)
    client.access_token = bearer(user.client)
    return client


def superuser_client(base_url: str, admin: httpx.Client) -> Client:
    client = Client(base_url)
    client.access_token = bearer(admin)
    return client
