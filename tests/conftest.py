"""Session fixtures: one embedded PostgreSQL and one ragkeep server for the whole run.

Each test makes its own users, so tests stay independent while sharing the (slow to start)
database and embedding model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from ragkeep.config import Settings
from ragkeep.db.database import start_embedded
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, TestUser, login, make_settings, register


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("pg")
    settings = make_settings(home, None)
    url, server = start_embedded(settings)
    yield url
    server.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Every test client is 127.0.0.1, and schemathesis alone fails ~100 log-ins from it: the
    # per-address log-in limit would lock out later tests' new users. tests/faults/test_auth_throttle.py
    # checks that limit on servers of its own.
    return make_settings(tmp_path_factory.mktemp("home"), pg_url, auth={"login_failures_per_address": 0})


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[ServerThread]:
    logging.getLogger("ragkeep").setLevel(logging.INFO)
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture(scope="session")
def base_url(server: ServerThread) -> str:
    return server.base_url


@pytest.fixture(scope="session")
def admin(base_url: str) -> Iterator[httpx.Client]:
    with login(base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        yield client


@pytest.fixture
def make_user(base_url: str) -> Iterator:
    made: list[TestUser] = []

    def _make(prefix: str = "user") -> TestUser:
        user = register(base_url, prefix)
        made.append(user)
        return user

    yield _make
    for u in made:
        u.client.close()


#: A test that uses one of these (directly or through other fixtures) needs PostgreSQL.
DB_FIXTURES = frozenset({"pg_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``db`` every test that needs PostgreSQL, from the fixtures it uses, so that
    ``-m "not db"`` runs the pure logic without starting a database."""
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
