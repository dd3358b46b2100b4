"""Fixtures shared by the client tests."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture(scope="module")
def jwt_secret(pg_url: str) -> str:
    """The signing secret the server generated and keeps in its database."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT value FROM ragkeep_meta WHERE key = 'jwt_secret'").fetchone()
    assert row is not None
    return row[0]
