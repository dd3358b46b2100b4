"""Metrics tests run on a database of their own (on the session's embedded PostgreSQL).

The figures asserted here are global (active users, totals, top users, sizes), so the session's
database, shared with every other test, would make them moving targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, ServerThread, login, own_server

#: The bearer token /metrics wants on the module's server.
PROM_TOKEN = "prometheus-test-token"

@pytest.fixture(scope="module")
def metrics_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    home: Path = tmp_path_factory.mktemp("metrics-home")
    metrics = {"flush_seconds": 0.2, "prometheus_token": PROM_TOKEN}
    with own_server(pg_url, home, "metrics", metrics=metrics) as srv:
        yield srv


@pytest.fixture(scope="module")
def metrics_url(metrics_server: ServerThread) -> str:
    return metrics_server.database_url


@pytest.fixture(scope="module")
def metrics_base_url(metrics_server: ServerThread) -> str:
    return metrics_server.base_url


@pytest.fixture(scope="module")
def metrics_admin(metrics_base_url: str) -> Iterator[httpx.Client]:
    with login(metrics_base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        yield client


def query(url: str, statement: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()
