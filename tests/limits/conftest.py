"""Fixtures for the quota and rate-limit tests.

Most tests run on the session's server and give their own users limits through
``limits_overrides`` (as a superuser would). ``replica`` is a second server process-alike on the
same database, as a second replica behind a load balancer would be: limits must hold across both.
Its configuration differs from the session server's only in ``ROUTE_LIMITED`` (a route limit
from TOML, tested through the replica only) and upload sizes per type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from ragkeep.config import Settings
from tests.support import ServerThread, TestUser, login, make_settings

#: A cheap route limited by the replica's configuration: 3 requests a minute per user.
ROUTE_LIMITED = "/v3/users/{user_id}/api-keys"
ROUTE_LIMIT = 3


@pytest.fixture(scope="module")
def replica(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    limits = {
        "route_limits": {ROUTE_LIMITED: {"route_per_min": ROUTE_LIMIT}},
        "max_upload_size_by_type": {"md": 64},
    }
    replica_settings = make_settings(tmp_path_factory.mktemp("replica-home"), settings.database.url, limits=limits)
    with ServerThread(replica_settings) as srv:
        yield srv


@pytest.fixture
def on_replica(replica: ServerThread) -> Callable[[TestUser], httpx.Client]:
    """The same user, logged in on the replica."""
    made: list[httpx.Client] = []

    def _login(user: TestUser) -> httpx.Client:
        client = login(replica.base_url, user.email, user.password)
        made.append(client)
        return client

    yield _login
    for c in made:
        c.close()


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        yield conn


def set_limits(admin: httpx.Client, user: TestUser, overrides: dict) -> None:
    r = admin.post(f"/v3/users/{user.id}", json={"limits_overrides": overrides})
    assert r.status_code == 200, r.text


def fresh_minute(db: psycopg.Connection, need_seconds: float = 20) -> None:
    """Wait, if need be, until the database's current minute has ``need_seconds`` left, so that a
    test counting requests in one minute window is not split by the minute changing."""
    row = db.execute("SELECT extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now())").fetchone()
    left = float(row[0])
    if left < need_seconds:
        time.sleep(left + 0.2)


def utc_now() -> datetime:
    return datetime.now(UTC)
