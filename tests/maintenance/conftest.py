"""Maintenance tests run on databases of their own (on the session's embedded PostgreSQL).

VACUUM, REINDEX and the dead-tuple figures are about whole tables, so sharing the session's
database would let other tests' rows change the numbers asserted here (and ours theirs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, login, own_database, own_server

MAINTENANCE = {"reindex_dead_share": 0.2, "reindex_min_dead_tuples": 50}


@pytest.fixture(scope="module")
def db_factory(pg_url: str) -> Iterator[Callable[[str], str]]:
    """Empty databases of their own, as many as a module asks for, dropped after it."""
    with ExitStack() as stack:
        yield lambda prefix="maint": stack.enter_context(own_database(pg_url, prefix))


@pytest.fixture(scope="module")
def maint_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with no schedule (manual runs only) on a database of its own."""
    home: Path = tmp_path_factory.mktemp("maint-home")
    with own_server(pg_url, home, "maint", database={"maintenance": dict(MAINTENANCE)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def maint_url(maint_server: ServerThread) -> str:
    return maint_server.database_url


@pytest.fixture(scope="module")
def maint_base_url(maint_server: ServerThread) -> str:
    return maint_server.base_url


@pytest.fixture(scope="module")
def maint_admin(maint_base_url: str) -> Iterator[httpx.Client]:
    with login(maint_base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        yield client
