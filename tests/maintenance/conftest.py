"""Maintenance tests run on databases of their own (on the session's embedded PostgreSQL).

VACUUM, REINDEX and the dead-tuple figures are about whole tables, so sharing the session's
database would let other tests' rows change the numbers asserted here (and ours theirs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, create_database, drop_database, login, make_settings

MAINTENANCE = {"reindex_dead_share": 0.2, "reindex_min_dead_tuples": 50}


@pytest.fixture(scope="module")
def db_factory(pg_url: str) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(prefix: str = "maint") -> str:
        url = create_database(pg_url, prefix)
        made.append(url)
        return url

    yield make
    for url in made:
        drop_database(pg_url, url)


@pytest.fixture(scope="module")
def maint_url(db_factory: Callable[[str], str]) -> str:
    return db_factory("maint")


@pytest.fixture(scope="module")
def maint_server(maint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with no schedule (manual runs only) on a database of its own."""
    home: Path = tmp_path_factory.mktemp("maint-home")
    settings = make_settings(home, maint_url, database={"maintenance": dict(MAINTENANCE)})
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def maint_base_url(maint_server: ServerThread) -> str:
    return maint_server.base_url


@pytest.fixture(scope="module")
def maint_admin(maint_base_url: str) -> Iterator[httpx.Client]:
    with login(maint_base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        yield client
